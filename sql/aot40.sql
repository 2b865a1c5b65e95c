{#-
  aot40 (grain: year; depends_on: aot40_days; lookback: 1461 days, so that
  a year's row sees the four years before it). The ozone target value for
  the protection of vegetation: AOT40, May to July, 18,000 µg/m3·h averaged
  over five years (2008/50/EC Annex VII; (EU) 2024/2881 Annex I Section 2;
  the rules of kind `target`, metric `aot40`).

  Per station, local calendar year and rule judging the year: `aot40` (the
  year's sum of `aot40_days`: (value - 80) over valid hourly values above
  80 µg/m3, 08:00-20:00 CET, 1 May-31 July), `n_valid` and `n_possible`
  hours (92 days of 12 hours: 1104), `coverage`, `valid` (90 % of the
  possible hours: 2008/50/EC Annex VII A), `estimate` (`aot40 x n_possible
  / n_valid`, Annex VII's scaling for missing data), `complete` (false
  until the year's last window hour, 31 July 19:00 CET, is loaded),
  `mean_5y` (the mean `estimate` of the valid years among this one and the
  `years - 1` before it; NULL with fewer than three: "the minimum ... will
  be three years", Annex VII B), `n_years`, `target_value`, `instrument`,
  `basis` and `over_target`.
-#}
{% import "products.sql" as p -%}
{%- if "aot40_days" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` adds up `aot40_days`: set `depends_on: [aot40_days]`") }}
{%- endif -%}
WITH tr AS ({{ p.rules(params, ["target"], ["aot40"]) }}),
yr AS (
    SELECT pollutant, {{ p.tags_of(tags, "") }}year(day)::INTEGER AS year,
        sum(aot40_sum)::DECIMAL(38, 18) AS aot40, sum(n_valid)::BIGINT AS n_valid
    FROM {{ inputs.aot40_days }}
    GROUP BY ALL
),
yv AS (
    SELECT *, 1104 AS n_possible, n_valid * 10 >= 9 * 1104 AS valid,
        CASE WHEN n_valid > 0 THEN aot40::DOUBLE * 1104 / n_valid END AS estimate
    FROM yr
),
five AS (
    SELECT k.pollutant, {{ p.tags_of(tags, "k.") }}k.year, t.instrument, t.value, t.years, t.valid_from, t.valid_to, t.outlook,
        avg(b.estimate) FILTER (WHERE b.valid) AS mean_5y,
        count(*) FILTER (WHERE b.valid) AS n_years
    FROM yv k
    JOIN tr t ON t.pollutant = k.pollutant
    JOIN yv b ON b.pollutant = k.pollutant{{ p.same_tags(tags, "b.", "k.") }} AND b.year BETWEEN k.year - t.years + 1 AND k.year
    WHERE k.year >= {{ keys_from }} AND k.year < {{ keys_to }}
    GROUP BY ALL
)
SELECT k.pollutant, {{ p.tags_of(tags, "k.") }}k.year, k.aot40::DOUBLE AS aot40, k.n_valid, k.n_possible,
    k.n_valid / k.n_possible AS coverage, k.valid, k.estimate,
    coalesce((SELECT max(n.h) FROM {{ newest }} n WHERE n.pollutant = k.pollutant), -1)
        >= (make_date(k.year, 7, 31) - DATE '1970-01-01')::BIGINT * 24 + 18 AS complete,
    CASE WHEN f.n_years >= 3 THEN f.mean_5y END AS mean_5y, f.n_years,
    f.value AS target_value, 'µg/m3·h' AS unit, f.instrument, {{ p.basis("f.", "k.year") }} AS basis,
    CASE WHEN f.n_years >= 3 THEN f.mean_5y > f.value END AS over_target
FROM yv k
JOIN five f ON f.pollutant = k.pollutant{{ p.same_tags(tags, "f.", "k.") }} AND f.year = k.year
WHERE k.year >= {{ keys_from }} AND k.year < {{ keys_to }} AND {{ p.judges_year("f.", "k.year") }}
