-- Latency and errors of each run's candidate beside production's (same batches, same machine), with the
-- previous run in the same package group (by version, then time): is each version slower than the last?
-- Figures come from shadow_metrics (analysis/operational.py), batch counts from shadow_invocations.
-- Cloud runs measure no per-batch latency (Batch Transform): their rows have nulls here.
CREATE OR REPLACE VIEW {database}.shadow_latency_trend AS
SELECT candidate_package,
       candidate_model,
       package_group,
       package_version,
       started_at,
       run_id,
       decision,
       candidate_invocations,
       candidate_records,
       candidate_p50_record_latency_s,
       candidate_p99_record_latency_s,
       production_p99_record_latency_s,
       p99_record_latency_ratio,
       p99_record_latency_ratio_ci_low,
       p99_record_latency_ratio_ci_high,
       noise_p99_record_latency_ratio,
       candidate_error_rate,
       production_error_rate,
       candidate_server_peak_rss_mb,
       lag(run_id) OVER (PARTITION BY coalesce(package_group, candidate_model)
                 ORDER BY package_version, started_at, run_id) AS previous_run_id,
       lag(candidate_p99_record_latency_s) OVER (PARTITION BY coalesce(package_group, candidate_model)
                 ORDER BY package_version, started_at, run_id) AS previous_p99_record_latency_s,
       candidate_p99_record_latency_s / nullif(lag(candidate_p99_record_latency_s) OVER (
                 PARTITION BY coalesce(package_group, candidate_model)
                 ORDER BY package_version, started_at, run_id), 0) AS p99_change_from_previous
FROM (
    SELECT r.run_id,
           r.candidate_package,
           r.candidate_model,
           r.started_at,
           r.decision,
           nullif(regexp_extract(r.candidate_package, '^(?:.*:model-package/)?(.+)/[0-9]+$', 1), '') AS package_group,
           try_cast(nullif(regexp_extract(r.candidate_package, '/([0-9]+)$', 1), '') AS integer) AS package_version,
           i.candidate_invocations,
           i.candidate_records,
           m.candidate_p50_record_latency_s,
           m.candidate_p99_record_latency_s,
           m.production_p99_record_latency_s,
           m.p99_record_latency_ratio,
           m.p99_record_latency_ratio_ci_low,
           m.p99_record_latency_ratio_ci_high,
           m.noise_p99_record_latency_ratio,
           m.candidate_error_rate,
           m.production_error_rate,
           m.candidate_server_peak_rss_mb
    FROM {database}.shadow_runs AS r
    JOIN (
        SELECT run_id,
               max(CASE WHEN metric = 'p50_record_latency_ratio' THEN candidate END) AS candidate_p50_record_latency_s,
               max(CASE WHEN metric = 'p99_record_latency_ratio' THEN candidate END) AS candidate_p99_record_latency_s,
               max(CASE WHEN metric = 'p99_record_latency_ratio' THEN production END) AS production_p99_record_latency_s,
               max(CASE WHEN metric = 'p99_record_latency_ratio' THEN value END) AS p99_record_latency_ratio,
               max(CASE WHEN metric = 'p99_record_latency_ratio' THEN ci_low END) AS p99_record_latency_ratio_ci_low,
               max(CASE WHEN metric = 'p99_record_latency_ratio' THEN ci_high END) AS p99_record_latency_ratio_ci_high,
               max(CASE WHEN metric = 'replay_p99_record_latency_ratio' THEN value END) AS noise_p99_record_latency_ratio,
               max(CASE WHEN metric = 'error_rate' THEN candidate END) AS candidate_error_rate,
               max(CASE WHEN metric = 'error_rate' THEN production END) AS production_error_rate,
               max(CASE WHEN metric = 'server_peak_rss_mb' THEN candidate END) AS candidate_server_peak_rss_mb
        FROM {database}.shadow_metrics
        WHERE slice = 'all'
          AND metric IN ('p50_record_latency_ratio', 'p99_record_latency_ratio', 'replay_p99_record_latency_ratio',
                         'error_rate', 'server_peak_rss_mb')
        GROUP BY run_id
    ) AS m ON m.run_id = r.run_id
    LEFT JOIN (
        SELECT run_id,
               sum(CASE WHEN side = 'candidate' THEN 1 ELSE 0 END) AS candidate_invocations,
               sum(CASE WHEN side = 'candidate' THEN records ELSE 0 END) AS candidate_records
        FROM {database}.shadow_invocations
        GROUP BY run_id
    ) AS i ON i.run_id = r.run_id
) AS latency_runs
