# frozen_string_literal: true

# Enqueues jobs the way Cocov's Rails API does: ActiveJob's Sidekiq adapter (`perform_later`,
# `set(wait:)`), or Sidekiq's own client for plain jobs. The ten job classes below have
# Cocov's names, queue and `perform` signatures; their bodies never run here.
#
#   SIDEKIQ_REDIS_URL=redis://… ruby tests/support/ruby/enqueue.rb < commands.json
#
# stdin: a JSON array of commands, each one of
#   {"class": "ProcessCommitJob", "args": [42]}                 perform_later
#   {"class": "ProcessCommitJob", "args": [42], "wait": 60}     set(wait: 60).perform_later
#   {"class": "ProcessCommitJob", "args": [42], "plain": true}  Sidekiq::Client.push, no ActiveJob
#   {"class": "UpdateCommitsAuthorJob", "bulk": [[1], [2], …]}  one push_bulk of ActiveJob payloads
#   {"class": "ProcessCommitJob", "args": [42], "fail": "retry", "error": "boom", "retry_count": 2}
#       perform_later, then the payload is taken back and failed through Sidekiq's own retry
#       handler (JobRetry#local), as a Sidekiq process does: it lands in the `retry` ZSET (or,
#       with "retry_count": 24 — 25 failures — in `dead`) with Sidekiq's error fields
# stdout: a JSON array with the Sidekiq jids of every payload written, in order.

require "json"
require "uri"
require "logger"
require "sidekiq"
require "sidekiq/job_retry"
require "active_job"
require "active_job/queue_adapters/sidekiq_adapter"

# redis://host:port/db, or unix:///path/redis.sock?db=N (the tests' embedded Redis).
def redis_options(url)
  uri = URI(url)
  return { url: url } unless uri.scheme == "unix"

  { path: uri.path, db: Integer(URI.decode_www_form(uri.query.to_s).to_h.fetch("db", "0")) }
end

Redis.sadd_returns_boolean = false if Redis.respond_to?(:sadd_returns_boolean=)
Sidekiq.configure_client { |config| config.redis = redis_options(ENV.fetch("SIDEKIQ_REDIS_URL")) }
Sidekiq.logger = Logger.new(nil)
ActiveJob::Base.queue_adapter = :sidekiq
ActiveJob::Base.logger = Logger.new(nil)

# Cocov's ApplicationJob: every job on the default queue, no retry options.
class ApplicationJob < ActiveJob::Base
  queue_as :default
end

class ComputeRepositoryCommitsSizeJob < ApplicationJob
  def perform(repo_id); end
end

class DestroyRepositoryJob < ApplicationJob
  def perform(id); end
end

class InitializeRepositoryJob < ApplicationJob
  def perform(repo_id); end
end

class ProcessCommitJob < ApplicationJob
  def perform(id); end
end

class ProcessCoverageJob < ApplicationJob
  def perform(repo_id, sha, data); end
end

class RequestCacheEvictionJob < ApplicationJob
  def perform(repo_id); end
end

class UpdateCommitsAuthorJob < ApplicationJob
  def perform(user_id); end
end

class UpdateOrganizationReposJob < ApplicationJob
  def perform; end
end

class UpdateRepoPermissionsJob < ApplicationJob
  def perform(id); end
end

class UpdateUserPermissionsJob < ApplicationJob
  def perform(uid); end
end

WRAPPER = ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper

# Take the payload of `jid` out of queue:default and fail it as Sidekiq's processor would.
def fail_through_sidekiq(jid, command)
  payload = Sidekiq.redis do |redis|
    found = redis.lrange("queue:default", 0, -1).find { |entry| JSON.parse(entry)["jid"] == jid }
    redis.lrem("queue:default", 1, found)
    JSON.parse(found)
  end
  if command["retry_count"]
    payload["retry_count"] = command["retry_count"]
    payload["failed_at"] = Time.now.to_f - 3600
  end
  Sidekiq::JobRetry.new.local(WRAPPER.new, JSON.generate(payload), "default") do
    raise ArgumentError, command.fetch("error")
  end
rescue Sidekiq::JobRetry::Skip
  nil
end

def run(command)
  name = command.fetch("class")
  return [Sidekiq::Client.push("class" => name, "queue" => "default", "args" => command.fetch("args"))] if command["plain"]

  klass = Object.const_get(name)
  if command["bulk"]
    payloads = command["bulk"].map { |args| [klass.new(*args).serialize] }
    return Sidekiq::Client.push_bulk("class" => WRAPPER, "wrapped" => klass, "queue" => "default", "args" => payloads)
  end
  job = command["wait"] ? klass.set(wait: command["wait"]) : klass
  jid = job.perform_later(*command.fetch("args")).provider_job_id
  fail_through_sidekiq(jid, command) if command["fail"]
  [jid]
end

puts JSON.generate(JSON.parse($stdin.read).flat_map { |command| run(command) })
