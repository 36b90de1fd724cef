-- Quarantined records per run, stage and reason.
-- Portable: runs on DuckDB and on Athena (Trino) as written.
CREATE OR REPLACE VIEW {database}.shadow_quarantine_by_reason AS
SELECT run_id,
       stage,
       reason,
       count(*) AS records
FROM {database}.shadow_quarantine
GROUP BY run_id, stage, reason
