{#-
  aot40_days (grain: day). The day-level partial sums of AOT40 (2008/50/EC
  Annex VII; (EU) 2024/2881 Annex I Section 2) that `aot40` adds up per
  year: per O3 job (`params.pollutants`' o3), station and local day, over
  the day's hourly values between 08:00 and 20:00 Central European Time
  (UTC+1 all year, whatever the model's time zone: the hours starting
  07:00-18:00 UTC) on a CET date from 1 May to 31 July: `aot40_sum`, the
  exact sum of (value - 80) over the valid values strictly above 80 µg/m3
  (DECIMAL(38,18)), `n_valid` (valid hourly values in that window) and
  `n_over` (of them, above 80). A row for every day holding an hourly row
  in the window.
-#}
{% import "products.sql" as p -%}
SELECT x.pollutant, {{ p.tags_of(tags, "x.") }}c.day,
    coalesce(sum((x.avg::DECIMAL(38, 18) - 80)) FILTER (WHERE {{ p.valid(params, "x.") }} AND x.avg > 80), 0)::DECIMAL(38, 18) AS aot40_sum,
    count(*) FILTER (WHERE {{ p.valid(params, "x.") }}) AS n_valid,
    count(*) FILTER (WHERE {{ p.valid(params, "x.") }} AND x.avg > 80) AS n_over
FROM {{ hourly }} x JOIN {{ calendar }} c ON c.h = x.h
WHERE x.pollutant = {{ p.job_of(params, "o3") }}
  AND (x.h + 1) % 24 BETWEEN 8 AND 19
  AND month(make_timestamp((x.h + 1) * 3600000000)) BETWEEN 5 AND 7
  AND c.day >= {{ keys_from }} AND c.day < {{ keys_to }}
GROUP BY ALL
