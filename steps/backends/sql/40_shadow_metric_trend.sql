-- Each metric of each run beside the run's time, package and decision: a trend per model package.
-- Portable: runs on DuckDB and on Athena (Trino) as written.
CREATE OR REPLACE VIEW {database}.shadow_metric_trend AS
SELECT r.candidate_package,
       r.candidate_model,
       r.started_at,
       m.run_id,
       m.metric,
       m.slice,
       m.production,
       m.candidate,
       m.delta,
       m.ci_low,
       m.ci_high,
       m.support,
       m.threshold,
       m.passed,
       r.decision
FROM {database}.shadow_metrics AS m
JOIN {database}.shadow_runs AS r ON r.run_id = m.run_id
