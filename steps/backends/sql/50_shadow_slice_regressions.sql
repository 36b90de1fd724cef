-- Slices (shadow_metrics rows with slice <> 'all') where the candidate regressed: the gate's check
-- on that slice failed, or the interval of delta = candidate - production lies wholly below zero
-- (delta is read as higher-is-better, as relative_to_production checks read it; a lower-is-better
-- metric regresses here only through its check). Each row carries the run's overall value to compare.
CREATE OR REPLACE VIEW {database}.shadow_slice_regressions AS
SELECT r.candidate_package,
       r.started_at,
       s.run_id,
       s.metric,
       s.slice,
       s.value,
       overall.value AS overall_value,
       s.value - overall.value AS gap_to_overall,
       s.production,
       s.candidate,
       s.delta,
       s.ci_low,
       s.ci_high,
       s.support,
       s.threshold,
       s.passed,
       CASE WHEN s.passed = false THEN 'failed_check' ELSE 'interval_below_zero' END AS regression
FROM {database}.shadow_metrics AS s
LEFT JOIN {database}.shadow_metrics AS overall
       ON overall.run_id = s.run_id AND overall.metric = s.metric AND overall.slice = 'all'
LEFT JOIN {database}.shadow_runs AS r ON r.run_id = s.run_id
WHERE s.slice <> 'all'
  AND (s.passed = false OR s.ci_high < 0)
