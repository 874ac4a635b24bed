# frozen_string_literal: true

# Sidekiq side of bench/intake.py: the payloads Cocov's API writes, pushed with push_bulk, and
# Sidekiq draining those same payloads through ActiveJob with a job that does nothing.
#
# As a pusher:  ruby bench/sidekiq/intake.rb push JOBS [FIRST]   (ActiveJob payloads for user
#               ids FIRST… (default 1), queue default)
# As a worker:  sidekiq -r ./bench/sidekiq/intake.rb -q default -c N
#
# Environment and timing as in bench.rb (required below): BENCH_REDIS_URL, BENCH_EXPECTED,
# BENCH_BATCH; the BENCH_EXPECTED-th job writes its stamps to bench:done. For
# bench/faults/intake_kill.py, BENCH_SLEEP (seconds) makes each job take that long and every
# finished job increments bench:completed.

require_relative "bench"
require "active_job"
require "active_job/queue_adapters/sidekiq_adapter"

ActiveJob::Base.queue_adapter = :sidekiq
# Per-job "Performing"/"Performed" lines cost time; Sidekiq's own are off in bench.rb.
ActiveJob::Base.logger = Logger.new(nil)

# Cocov's UpdateCommitsAuthorJob (queue_as :default, perform(user_id)), doing nothing.
class UpdateCommitsAuthorJob < ActiveJob::Base
  queue_as :default

  SLEEP = Float(ENV.fetch("BENCH_SLEEP", "0"))

  def perform(_user_id)
    Bench.started
    if SLEEP.positive?
      sleep SLEEP
      Sidekiq.redis { |redis| redis.incr("bench:completed") }
    end
    Bench.finished
  end
end

if $PROGRAM_NAME == __FILE__
  mode, jobs, first = ARGV
  abort "usage: ruby intake.rb push JOBS [FIRST]" unless mode == "push" && jobs
  batch = Integer(ENV.fetch("BENCH_BATCH", "1000"))
  wrapper = ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper
  first = Integer(first || "1")
  started = Bench.now
  (first...(first + Integer(jobs))).each_slice(batch) do |ids|
    payloads = ids.map { |id| [UpdateCommitsAuthorJob.new(id).serialize] }
    Sidekiq::Client.push_bulk(
      "class" => wrapper, "wrapped" => UpdateCommitsAuthorJob, "queue" => "default", "args" => payloads
    )
  end
  puts({ "seconds" => Bench.now - started, "jobs" => Integer(jobs) }.to_json)
end
