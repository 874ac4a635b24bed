"""Replacing Sidekiq under an unchanged Cocov API: the payloads its Rails API enqueues
(:mod:`.payload`), stored as our jobs exactly once (:mod:`.store`) by every worker process
(:mod:`.intake`), and the jobs a replaced Sidekiq left behind (:mod:`.leftovers`)."""
