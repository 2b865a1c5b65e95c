{#-
  Hourly aggregates of one pollutant, per station and UTC hour.

  Completeness follows EU Directive 2008/50/EC, Annex VII: an hourly value is
  valid when at least 75% of its minutes (45 of 60) have a reading.
  `params.min_coverage` changes the threshold; `params.unit` is carried along.
  `avg` adds the readings up exactly (as DECIMAL(38,18), the nearest 1e-18
  of each) and rounds only at the end, so that it does not depend on the
  order the source sends them in, and an hour of one-decimal readings whose
  mean is exactly 200 (the NO2 hourly limit) is 200, not 200.00000000000003.
  An hour with a reading of 1e20 or more in magnitude is averaged as DOUBLEs.
  The result must keep `pollutant` (the job name) and `hour_start`: sinks
  replace exactly those (pollutant, hours) on every load.
-#}
{% import "macros.sql" as m -%}
SELECT
    {{ job.name | sqlstr }} AS pollutant,
{%- for t in tags %}
    {{ t | ident }},
{%- endfor %}
    {{ m.hour_of("time") }} AS hour_start,
    CASE WHEN max(abs(value)) < 1e20 THEN avg(TRY_CAST(value AS DECIMAL(38, 18)))
        ELSE avg(value) END AS avg,
    min(value) AS min,
    max(value) AS max,
    {{ m.minutes_present("time") }} AS n_minutes,
    n_minutes / 60.0 AS coverage,
    coverage >= {{ params.min_coverage | default(0.75) }} AS valid,
    {{ params.unit | default("") | sqlstr }} AS unit,
    {{ source | sqlstr }} AS source,
    current_timestamp AS loaded_at
FROM {{ staging }}
WHERE time >= {{ window_start | ts }} AND time < {{ window_end | ts }}
GROUP BY ALL
ORDER BY hour_start{% for t in tags %}, {{ t | ident }}{% endfor %}
