"""Every Prometheus metric of Notify, declared once (STYLE.md habit 6).

Labels come from small fixed sets (service, topic, route template, reason, channel,
outcome) and never carry a user id. A service imports the ones it uses; prometheus-client
exports only metrics that were touched, plus every declared metric with no labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- HTTP (RED) -------------------------------------------------------------------------
# counter: HTTP requests handled, by route template and status class (2xx..5xx)
HTTP_REQUESTS = Counter(
    "notify_http_requests_total", "HTTP requests handled", ["service", "route", "method", "status"]
)
# histogram: HTTP request duration in seconds, by route template
HTTP_DURATION = Histogram(
    "notify_http_request_duration_seconds",
    "HTTP request duration",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# --- rate limits (notify_common.ratelimit; ingest per service token, inbox and realtime
# per user) ---------------------------------------------------------------------------------
# counter: requests refused with 429 because their key was over its limit
RATE_LIMITED = Counter("notify_rate_limited_total", "Requests refused by a rate limit", ["service"])
# counter: rate-limit checks that could not reach the shared store (the request was allowed)
RATE_LIMIT_STORE_ERRORS = Counter(
    "notify_rate_limit_store_errors_total", "Rate-limit checks that failed open", ["service"]
)

# --- Kafka consumers (the shared runner) -----------------------------------------------
# counter: messages consumed, by consumer group and topic, whatever their outcome
CONSUMED = Counter("notify_consumer_messages_total", "Messages consumed", ["group", "topic"])
# histogram: time a handler took per batch, seconds
HANDLER_DURATION = Histogram(
    "notify_consumer_handler_duration_seconds",
    "Handler duration per batch",
    ["group"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
# counter: handler retries after a transient failure
RETRIES = Counter("notify_consumer_retries_total", "Handler retries", ["group"])
# counter: messages written to the DLQ, by consumer group and reason class
DLQ_WRITES = Counter(
    "notify_dlq_messages_total", "Messages dead-lettered", ["group", "topic", "error_class"]
)
# gauge: consumer lag (high watermark - committed position) per partition
CONSUMER_LAG = Gauge(
    "notify_consumer_lag_messages", "Consumer lag", ["group", "topic", "partition"]
)

# --- Producers ----------------------------------------------------------------------------
# counter: events published, by topic and result (ok|error)
PUBLISHED = Counter("notify_published_events_total", "Events published", ["topic", "result"])

# --- ingest ---------------------------------------------------------------------------
# counter: upstream requests accepted (202/204) by kind
INGEST_ACCEPTED = Counter("notify_ingest_accepted_total", "Upstream events accepted", ["kind"])
# counter: upstream requests rejected by reason
# (auth|forbidden|rate_limited|validation|malformed|unavailable)
INGEST_REJECTED = Counter("notify_ingest_rejected_total", "Upstream requests rejected", ["reason"])

# --- fanout ---------------------------------------------------------------------------
# counter: source events (messages, announcements) processed by the fanout
FANOUT_EVENTS = Counter("notify_fanout_events_total", "Source events fanned out", ["kind"])
# counter: notifications emitted, one per recipient
FANOUT_RECIPIENTS = Counter("notify_fanout_recipients_total", "Notifications emitted")
# counter: decisions not to notify a candidate recipient, by reason
FANOUT_SUPPRESSED = Counter("notify_fanout_suppressed_total", "Candidates not notified", ["reason"])
# gauge: entries in the fanout's directory tables held by this worker
FANOUT_TABLE_ENTRIES = Gauge("notify_fanout_table_entries", "Directory table entries", ["table"])

# --- inbox --------------------------------------------------------------------------
# counter: notifications persisted to the feed (duplicates not counted)
INBOX_PERSISTED = Counter("notify_inbox_persisted_total", "Notifications persisted")
# counter: redelivered notifications already in the feed
INBOX_DUPLICATES = Counter("notify_inbox_duplicates_total", "Duplicate notifications skipped")
# gauge: outbox rows not yet published
OUTBOX_BACKLOG = Gauge("notify_outbox_backlog", "Outbox rows waiting to be published")
# counter: outbox rows published
OUTBOX_PUBLISHED = Counter("notify_outbox_published_total", "Outbox rows published")
# counter: deliveries recorded, by channel and outcome
DELIVERIES = Counter("notify_deliveries_total", "Delivery outcomes", ["channel", "outcome"])
# counter: dead letters from notify.dlq.v1 newly recorded for the admin API (redeliveries
# of an already recorded one not counted), by the contract name of the original topic
ADMIN_DLQ_RECORDED = Counter(
    "notify_admin_dlq_recorded_total", "Dead letters recorded by the inbox", ["topic"]
)
# counter: dead letters republished to their original topic by an admin requeue
ADMIN_DLQ_REQUEUED = Counter(
    "notify_admin_dlq_requeued_total", "Dead letters requeued to their topic", ["topic"]
)
# counter: fanout summaries (notify.fanout-results.v1) stored, by source kind
ADMIN_FANOUT_RESULTS = Counter(
    "notify_admin_fanout_results_total", "Fanout summaries recorded", ["kind"]
)
# counter: suppression log rows written (new or updated; a replay counts again), by level:
# fanout (nobody notified: notify.suppressions.v1) or channel (a held or dropped delivery)
ADMIN_SUPPRESSIONS = Counter(
    "notify_admin_suppressions_total", "Suppression log rows recorded", ["level"]
)
# counter: suppression log rows deleted after the retention period
ADMIN_SUPPRESSIONS_EXPIRED = Counter(
    "notify_admin_suppressions_expired_total", "Suppression log rows past retention deleted"
)

# --- realtime ------------------------------------------------------------------------
# gauge: open SSE streams on this realtime process
REALTIME_CONNECTIONS = Gauge("notify_realtime_connections", "Open SSE streams")
# counter: SSE events written to clients, by event type (notification|read|unread-count|resync)
REALTIME_EVENTS_SENT = Counter(
    "notify_realtime_events_sent_total", "SSE events written to clients", ["type"]
)
# counter: streams told to resync (and closed), by reason (overflow|backfill_limit|
# unknown_last_event_id|feed_behind|database_unavailable)
REALTIME_RESYNCS = Counter("notify_realtime_resyncs_total", "Streams told to resync", ["reason"])
# counter: notifications replayed from the feed to a resuming client (Last-Event-ID)
REALTIME_BACKFILLED = Counter(
    "notify_realtime_backfilled_total", "Notifications replayed to resuming clients"
)
# histogram: seconds from a notification's Kafka timestamp (the fanout produced it) to its
# write to an SSE connection; live events only (backfilled ones are old by definition)
REALTIME_SEND_LATENCY = Histogram(
    "notify_realtime_send_latency_seconds",
    "Kafka timestamp to SSE write, live notifications",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
)

# --- push (inbox: subscriptions; push-sender: delivery) ----------------------------------
# counter: subscription saves by result (created|updated|rejected)
PUSH_SUBSCRIPTION_SAVES = Counter(
    "notify_push_subscription_saves_total", "Push subscription saves", ["result"]
)
# counter: endpoints refused by the SSRF/endpoint policy, by where (save|connect)
PUSH_ENDPOINT_REFUSED = Counter(
    "notify_push_endpoint_refused_total", "Push endpoints refused by the endpoint policy", ["at"]
)
# counter: push attempts, by outcome (sent|retry|gone|failed|auth|blocked|dead|dropped) and
# status class (2xx|3xx|4xx|5xx|timeout|connection|blocked|none)
PUSH_ATTEMPTS = Counter(
    "notify_push_attempts_total", "Web Push attempts", ["outcome", "status_class"]
)
# histogram: duration of one push request (encryption excluded), seconds
PUSH_REQUEST_DURATION = Histogram(
    "notify_push_request_duration_seconds",
    "Web Push request duration",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# counter: 401/403 from push services: the VAPID key or subject is refused (alert on this)
PUSH_AUTH_REJECTED = Counter(
    "notify_push_auth_rejected_total", "Pushes refused for VAPID authorization (401/403)"
)
# counter: subscriptions deactivated by push-sender, by reason (gone|retired_key)
PUSH_DEACTIVATED = Counter(
    "notify_push_subscriptions_deactivated_total", "Subscriptions deactivated", ["reason"]
)
# counter: pushes queued from notifications, by disposition (now|held|dropped|duplicate)
PUSH_QUEUED = Counter(
    "notify_push_queued_total", "Pushes queued from notifications", ["disposition"]
)
# counter: push messages whose body was trimmed to fit the 4 096-byte record
PUSH_TRIMMED = Counter("notify_push_payload_trimmed_total", "Push payloads trimmed to fit")
# gauge: pushes in flight in this process
PUSH_IN_FLIGHT = Gauge("notify_push_in_flight", "Pushes in flight")
# gauge: pushes waiting in the queue, by state (due|scheduled)
PUSH_BACKLOG = Gauge("notify_push_backlog", "Pushes waiting to be sent", ["state"])

# --- email (email-digest; the inbox counts unsubscribes) ------------------------------------
# counter: mails accepted by the SMTP server, by kind (immediate|digest)
EMAIL_SENT = Counter("notify_email_sent_total", "Emails accepted by the SMTP server", ["kind"])
# counter: notifications whose mail was put off, by reason (digest: held for the daily
# digest | rate_limit: over the per-user hourly limit, folded into the digest | quota: the
# day's quota is used up, waiting for the next digest | smtp: digest attempts exhausted)
EMAIL_DEFERRED = Counter("notify_email_deferred_total", "Notifications deferred", ["reason"])
# counter: mails given up, by kind and reason (permanent: a 5xx reply | exhausted: temporary
# failures until the attempts ran out); each is dead-lettered
EMAIL_FAILED = Counter("notify_email_failed_total", "Emails failed", ["kind", "reason"])
# counter: notifications not mailed, by reason (no_address|unknown_user|email_off|digest_off)
EMAIL_SUPPRESSED = Counter("notify_email_suppressed_total", "Notifications not mailed", ["reason"])
# counter: temporary SMTP failures that will be retried, by kind and status class
# (4xx|5xx|connection|timeout; 5xx only before the mail transaction, e.g. AUTH)
EMAIL_RETRIES = Counter(
    "notify_email_retries_total", "Temporary SMTP failures retried", ["kind", "status_class"]
)
# histogram: one SMTP send (connect included when a new connection was needed), seconds
EMAIL_SMTP_DURATION = Histogram(
    "notify_email_smtp_duration_seconds",
    "SMTP send duration",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# gauge: mails counted against today's (UTC) quota, deployment-wide (every replica reports
# the same figure from PostgreSQL; alerts take the max)
EMAIL_QUOTA_USED = Gauge("notify_email_quota_used", "Emails counted against today's quota")
# gauge: today's quota (NOTIFY_EMAIL_DAILY_QUOTA)
EMAIL_QUOTA_LIMIT = Gauge("notify_email_quota_limit", "Today's email quota")
# gauge: what is left of today's quota (0 when used up)
EMAIL_QUOTA_REMAINING = Gauge("notify_email_quota_remaining", "Emails left in today's quota")
# counter: quota units taken, by kind (immediate: counted, never refused | digest)
EMAIL_QUOTA_CONSUMED = Counter("notify_email_quota_consumed_total", "Quota units taken", ["kind"])
# counter: quota alerts raised, by level (80|90|100); once per level per day
EMAIL_QUOTA_ALERTS = Counter("notify_email_quota_alerts_total", "Quota alerts raised", ["level"])
# counter: quota alert webhook posts, by result (ok|error|disabled)
EMAIL_QUOTA_WEBHOOK = Counter(
    "notify_email_quota_webhook_total", "Quota alert webhook posts", ["result"]
)
# gauge: notifications waiting on the email channel, by state (queued: immediate mail due
# or retrying | pending: waiting for the user's digest)
EMAIL_BACKLOG = Gauge("notify_email_backlog", "Notifications waiting for email", ["state"])
# counter: digest runs, by result (ok|error)
EMAIL_DIGEST_RUNS = Counter("notify_email_digest_runs_total", "Digest scheduler passes", ["result"])
# counter: one-click unsubscribes (inbox), by result (ok|refused)
EMAIL_UNSUBSCRIBES = Counter("notify_email_unsubscribes_total", "Unsubscribe requests", ["result"])

# counter: scheduled announcements by action (scheduled|released|cancelled)
SCHEDULED_ANNOUNCEMENTS = Counter(
    "notify_scheduled_announcements_total", "Scheduled announcements", ["action"]
)
# counter: producers replaced after a fatal librdkafka error (e.g. fenced idempotent producer)
PRODUCER_RESETS = Counter(
    "notify_kafka_producer_resets_total", "Kafka producers recreated after a fatal error"
)
# counter: source-stream gaps the fanout found and repaired by reading the range directly
# (see notify_fanout/contiguity.py); any increase means the consumer skipped records
FANOUT_GAPS_REPAIRED = Counter(
    "notify_fanout_gaps_repaired_total", "Skipped source ranges re-read by the fanout"
)
# counter: source partitions found stalled (records waiting, none arriving) and re-sought
# (see notify_fanout/watchdog.py)
FANOUT_STALLS = Counter(
    "notify_fanout_stalls_total", "Stalled source partitions the fanout re-sought"
)
# counter: source records recovered by gap repair
FANOUT_GAP_RECORDS = Counter(
    "notify_fanout_gap_records_total", "Source records recovered by gap repair"
)
