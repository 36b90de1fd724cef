-- The flip matrix without its diagonal: records per run and (production label, candidate label) pair
-- that changed, and, where ground truth exists, how many of them each model got right.
CREATE OR REPLACE VIEW {database}.shadow_label_flips AS
SELECT run_id,
       production_label,
       candidate_label,
       count(*) AS records,
       sum(CASE WHEN ground_truth_label IS NOT NULL THEN 1 ELSE 0 END) AS with_ground_truth,
       sum(CASE WHEN ground_truth_label = production_label THEN 1 ELSE 0 END) AS production_correct,
       sum(CASE WHEN ground_truth_label = candidate_label THEN 1 ELSE 0 END) AS candidate_correct
FROM {database}.shadow_records
WHERE production_label IS DISTINCT FROM candidate_label
GROUP BY run_id, production_label, candidate_label
