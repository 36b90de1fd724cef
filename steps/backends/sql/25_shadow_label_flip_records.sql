-- One row per record whose label flipped, with the input the models saw and who was right.
-- input_text may be null (tables.input_text: drop) or a sha256 (hash); input_kept says which, so
-- a dashboard can group identical hashed inputs without pretending to show them.
CREATE OR REPLACE VIEW {database}.shadow_label_flip_records AS
SELECT run_id,
       record_id,
       inference_id,
       inference_time,
       endpoint,
       variant,
       capture_file,
       capture_line,
       input_text,
       CASE
           WHEN input_text IS NULL THEN 'dropped'
           WHEN coalesce(regexp_extract(input_text, '^(?:sha256:)?[0-9a-f]{64}$', 0), '') <> '' THEN 'hashed'
           ELSE 'text'
       END AS input_kept,
       production_label,
       candidate_label,
       production_score,
       candidate_score,
       score_abs_diff,
       ground_truth_label,
       CASE
           WHEN ground_truth_label IS NULL THEN 'no_ground_truth'
           WHEN ground_truth_label = candidate_label THEN 'candidate_fixed'
           WHEN ground_truth_label = production_label THEN 'candidate_broke'
           ELSE 'both_wrong'
       END AS flip_outcome
FROM {database}.shadow_records
WHERE production_label IS DISTINCT FROM candidate_label
