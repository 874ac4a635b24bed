# frozen_string_literal: true

# Sidekiq side of bench/intake.py: the payloads Cocov's API writes, pushed with push_bulk, and
# Sidekiq draining those same payloads through ActiveJob with a job that does nothing.
#
# As a pusher:  ruby bench/sidekiq/intake.rb push JOBS      (ActiveJob payloads, queue default)
# As a worker:  sidekiq -r ./bench/sidekiq/intake.rb -q default -c N
#
# Environment and timing as in bench.rb (required below): BENCH_REDIS_URL, BENCH_EXPECTED,
# BENCH_BATCH; the BENCH_EXPECTED-th job writes its stamps to bench:done.

require_relative "bench"
require "active_job"
require "active_job/queue_adapters/sidekiq_adapter"

ActiveJob::Base.queue_adapter = :sidekiq
# Per-job "Performing"/"Performed" lines cost time; Sidekiq's own are off in bench.rb.
ActiveJob::Base.logger = Logger.new(nil)

# Cocov's UpdateCommitsAuthorJob (queue_as :default, perform(user_id)), doing nothing.
class UpdateCommitsAuthorJob < ActiveJob::Base
  queue_as :default

  def perform(_user_id)
    Bench.started
    Bench.finished
  end
end

if $PROGRAM_NAME == __FILE__
  mode, jobs = ARGV
  abort "usage: ruby intake.rb push JOBS" unless mode == "push" && jobs
  batch = Integer(ENV.fetch("BENCH_BATCH", "1000"))
  wrapper = ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper
  started = Bench.now
  (1..Integer(jobs)).each_slice(batch) do |ids|
    payloads = ids.map { |id| [UpdateCommitsAuthorJob.new(id).serialize] }
    Sidekiq::Client.push_bulk(
      "class" => wrapper, "wrapped" => UpdateCommitsAuthorJob, "queue" => "default", "args" => payloads
    )
  end
  puts({ "seconds" => Bench.now - started, "jobs" => Integer(jobs) }.to_json)
end
