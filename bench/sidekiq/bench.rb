# frozen_string_literal: true

# Sidekiq side of bench/engine.py: the same two workloads as our bench jobs.
#
# As a worker:  sidekiq -r ./bench/sidekiq/bench.rb -q bench -c N
# As a pusher:  ruby bench/sidekiq/bench.rb push noop|real JOBS ROWS
#
# Environment: BENCH_REDIS_URL (private redis-server), BENCH_DATABASE_URL (the bench database),
# BENCH_EXPECTED (jobs this worker run must complete), BENCH_BATCH (push_bulk batch size).
#
# Timing, stamped in the worker process with the wall clock (CLOCK_REALTIME, as Python's
# time.time()): "ready" when Sidekiq fires its :startup event (right before its processor
# threads start fetching), the first job's start and the BENCH_EXPECTED-th job's end, and the
# process's CPU time between ready and that end. The last job writes them to Redis under
# bench:done; the Python driver polls for that key.

require "json"
require "logger"
require "sidekiq"

REDIS_URL = ENV.fetch("BENCH_REDIS_URL")

Sidekiq.configure_server do |config|
  config.redis = { url: REDIS_URL }
  # Per-job "start"/"done" lines cost Sidekiq time; our worker logs nothing per job either.
  config.logger.level = Logger::WARN
  config.on(:startup) do
    Bench.ready!
    Sidekiq.redis { |r| r.set("bench:ready", Bench.now.to_s) }
  end
end

Sidekiq.configure_client do |config|
  config.redis = { url: REDIS_URL }
end

# In-process completion counter (Sidekiq runs the jobs in threads of this one process).
module Bench
  MUTEX = Mutex.new
  EXPECTED = Integer(ENV.fetch("BENCH_EXPECTED", "0"))
  @count = 0
  @first = nil

  def self.now
    Process.clock_gettime(Process::CLOCK_REALTIME)
  end

  def self.cpu
    Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
  end

  def self.ready!
    @cpu_at_ready = cpu
  end

  def self.started
    t = now
    MUTEX.synchronize { @first ||= t }
  end

  def self.finished
    t = now
    done = MUTEX.synchronize do
      @count += 1
      @count == EXPECTED
    end
    return unless done

    marker = {
      "first_start" => @first, "last_end" => t, "count" => @count,
      "cpu_seconds" => cpu - @cpu_at_ready
    }.to_json
    Sidekiq.redis { |r| r.set("bench:done", marker) }
  end

  # One PostgreSQL connection per Sidekiq thread, opened on the thread's first job. The pg gem
  # is loaded here, so the jobs that never touch PostgreSQL (intake) run without ruby-pg.
  def self.pg
    require "pg"
    Thread.current[:bench_pg] ||= PG.connect(ENV.fetch("BENCH_DATABASE_URL"))
  end
end

class BenchNoop
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(_n)
    Bench.started
    Bench.finished
  end
end

class BenchReal
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  SELECT = "SELECT id, commits_size FROM repositories WHERE id = $1"
  UPDATE = "UPDATE repositories SET commits_size = $2, updated_at = now() WHERE id = $1"

  def perform(repository_id)
    Bench.started
    Bench.pg.transaction do |conn|
      row = conn.exec_params(SELECT, [repository_id]).first
      raise "repository #{repository_id} not found" if row.nil?

      conn.exec_params(UPDATE, [repository_id, Integer(row["commits_size"]) + 1])
    end
    Bench.finished
  end
end

if $PROGRAM_NAME == __FILE__
  mode, workload, jobs, rows = ARGV
  abort "usage: ruby bench.rb push noop|real JOBS ROWS" unless mode == "push" && rows
  klass = { "noop" => BenchNoop, "real" => BenchReal }.fetch(workload)
  jobs = Integer(jobs)
  rows = Integer(rows)
  batch = Integer(ENV.fetch("BENCH_BATCH", "1000"))
  args = (0...jobs).map { |i| workload == "noop" ? [i] : [(i % rows) + 1] }
  started = Bench.now
  args.each_slice(batch) { |slice| Sidekiq::Client.push_bulk("class" => klass, "args" => slice) }
  puts({ "seconds" => Bench.now - started, "jobs" => jobs }.to_json)
end
