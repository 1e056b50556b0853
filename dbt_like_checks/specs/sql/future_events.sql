-- Rows whose event time is more than a day ahead of now: a clock or unit bug in the producer.
SELECT id, model, ts
FROM embeddings
WHERE ts > now() + INTERVAL 1 DAY
