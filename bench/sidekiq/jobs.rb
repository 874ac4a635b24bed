# frozen_string_literal: true

# Sidekiq side of bench/jobs.py: Cocov's ComputeRepositoryCommitsSizeJob on the raw pg gem.
#
# As a worker:  sidekiq -r ./bench/sidekiq/jobs.rb -q default -c N
# As a pusher:  ruby bench/sidekiq/jobs.rb push FIRST_REPOSITORY_ID COUNT
#
# Environment: BENCH_REDIS_URL (private redis-server), BENCH_DATABASE_URL (the bench database),
# BENCH_BATCH (push_bulk batch size).
#
# Cocov's job (app/jobs/compute_repository_commits_size_job.rb) finds the repository, sums its
# commits' clone_size and saves the repository. Here the same three statements run in one
# transaction on a per-thread pg connection (bench.rb's Bench.pg), without ActiveRecord and
# ActiveJob: a plain Sidekiq::Worker. Rails 7.0's save! would also run the model's three
# uniqueness validations (three more SELECTs), so this job is cheaper than Cocov's.
#
# Progress: every worker process adds the jobs it finished to the Redis counter bench:finished
# every PUBLISH_EVERY seconds; bench/jobs.py polls it. (Sidekiq's own stat:processed is only
# written by its heartbeat, every 5 s.)

require_relative "bench"

# Jobs finished by this process, published to Redis by a thread started at :startup.
module Progress
  PUBLISH_EVERY = 0.01
  MUTEX = Mutex.new
  @finished = 0

  def self.finished!
    MUTEX.synchronize { @finished += 1 }
  end

  def self.publish_forever
    published = 0
    loop do
      sleep PUBLISH_EVERY
      now = MUTEX.synchronize { @finished }
      next if now == published

      Sidekiq.redis { |r| r.incrby("bench:finished", now - published) }
      published = now
    end
  end
end

Sidekiq.configure_server do |config|
  config.on(:startup) { Thread.new { Progress.publish_forever } }
end

class ComputeRepositoryCommitsSizeJob
  include Sidekiq::Worker
  sidekiq_options queue: "default"

  FIND = "SELECT repositories.* FROM repositories WHERE repositories.id = $1 LIMIT 1"
  SUM = "SELECT SUM(commits.clone_size) FROM commits WHERE commits.repository_id = $1"
  SAVE = "UPDATE repositories SET commits_size = $1, updated_at = $2 WHERE repositories.id = $3"

  def perform(repo_id)
    Bench.pg.transaction do |conn|
      repository = conn.exec_params(FIND, [repo_id]).first
      raise "Couldn't find Repository with 'id'=#{repo_id}" if repository.nil?

      size = conn.exec_params(SUM, [repo_id]).getvalue(0, 0).to_i
      conn.exec_params(SAVE, [size, Time.now.utc, repo_id])
    end
    Progress.finished!
  end
end

if $PROGRAM_NAME == __FILE__
  mode, first, count = ARGV
  abort "usage: ruby jobs.rb push FIRST_REPOSITORY_ID COUNT" unless mode == "push" && count
  ids = (Integer(first)...(Integer(first) + Integer(count))).map { |id| [id] }
  batch = Integer(ENV.fetch("BENCH_BATCH", "1000"))
  started = Bench.now
  ids.each_slice(batch) do |slice|
    Sidekiq::Client.push_bulk("class" => ComputeRepositoryCommitsSizeJob, "args" => slice)
  end
  puts({ "seconds" => Bench.now - started, "jobs" => ids.size }.to_json)
end
