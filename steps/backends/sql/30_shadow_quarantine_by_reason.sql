-- Quarantined records per run, stage and reason, as a share of the run's captured records,
-- with one example record and detail to start from.
CREATE OR REPLACE VIEW {database}.shadow_quarantine_by_reason AS
SELECT q.run_id,
       q.stage,
       q.reason,
       count(*) AS records,
       CAST(count(*) AS double) / nullif(max(r.captured), 0) AS share_of_captured,
       min(q.record_id) AS example_record_id,
       min(q.detail) AS example_detail
FROM {database}.shadow_quarantine AS q
LEFT JOIN {database}.shadow_runs AS r ON r.run_id = q.run_id
GROUP BY q.run_id, q.stage, q.reason
