-- The W3C trace context of the request that wrote the event (events/tracing): its traceparent,
-- then a space and its tracestate when there is one. NULL when tracing was off. The relay sends it
-- on as the message's traceparent and tracestate headers.
ALTER TABLE outbox ADD COLUMN trace_context text NULL;
