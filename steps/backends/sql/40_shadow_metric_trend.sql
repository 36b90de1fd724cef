-- Each metric of each run beside its package version, time and decision, and the same metric of the
-- previous run in the same package group (by version, then time): a trend across candidates.
-- The window is spelled out three times: Athena does not take a named WINDOW clause everywhere.
CREATE OR REPLACE VIEW {database}.shadow_metric_trend AS
SELECT candidate_package,
       candidate_model,
       started_at,
       run_id,
       metric,
       slice,
       production,
       candidate,
       delta,
       ci_low,
       ci_high,
       support,
       threshold,
       passed,
       decision,
       package_group,
       package_version,
       value,
       lag(run_id) OVER (PARTITION BY coalesce(package_group, candidate_model), metric, slice
                 ORDER BY package_version, started_at, run_id) AS previous_run_id,
       lag(value) OVER (PARTITION BY coalesce(package_group, candidate_model), metric, slice
                 ORDER BY package_version, started_at, run_id) AS previous_value,
       value - lag(value) OVER (PARTITION BY coalesce(package_group, candidate_model), metric, slice
                 ORDER BY package_version, started_at, run_id) AS change_from_previous
FROM (
    SELECT r.candidate_package,
           r.candidate_model,
           r.started_at,
           m.run_id,
           m.metric,
           m.slice,
           m.value,
           m.production,
           m.candidate,
           m.delta,
           m.ci_low,
           m.ci_high,
           m.support,
           m.threshold,
           m.passed,
           r.decision,
           nullif(regexp_extract(r.candidate_package, '^(?:.*:model-package/)?(.+)/[0-9]+$', 1), '') AS package_group,
           try_cast(nullif(regexp_extract(r.candidate_package, '/([0-9]+)$', 1), '') AS integer) AS package_version
    FROM {database}.shadow_metrics AS m
    JOIN {database}.shadow_runs AS r ON r.run_id = m.run_id
) AS metric_runs
