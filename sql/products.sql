{#- Shared pieces of the product models (daily_mean.sql and friends).

  Rules: EU Directive 2008/50/EC Annexes VII and XI, Directive (EU)
  2024/2881 Annexes I and IV, and the EEA's European Air Quality Index.
  Only valid hourly values enter a product: at least `min_minutes` (45 of
  60, i.e. 75 %) minutes present (2008/50/EC Annex VII). Hours are numbered
  `h` (hours since 1970-01-01T00:00Z) so that windows are integer ranges:
  no time-zone functions are needed (ICU is an extension a pipeline may
  not load), and no floating drift can creep in.

  Means add the hourly averages up exactly, as `DECIMAL(38,18)` (the
  nearest 1e-18 of each), and round only at the end. A sum of DOUBLEs
  depends on the order DuckDB adds them in (a 24-hour window's on where
  the range computed starts, a day's on the order its hours are stored,
  which a backfill of one hour changes), so an hourly recomputation would
  not give the same bits as a full one; and on a limit it is wrong about
  half the time: in a simulation of 2,000 days of integer minute readings
  whose mean is exactly 50, a DOUBLE sum in hour order gave 50 for 1,029
  of them, the exact sum for all. Hourly averages must be under 1e20 in
  magnitude.
-#}

{#- The job holding pollutant `p` (co, no2, o3, pm10, pm25, so2):
    `params.pollutants` maps those names to job names; default the same. -#}
{% macro job_of(params, p) -%}
{%- if params.pollutants is defined and p in params.pollutants -%}
{{ params.pollutants[p] | sqlstr }}
{%- else -%}
{{ p | sqlstr }}
{%- endif -%}
{%- endmacro %}

{#- Whether the hourly row `a` is valid: enough minutes present. -#}
{% macro valid(params, a) -%}
{{ a }}n_minutes >= {{ params.min_minutes | default(45) }}
{%- endmacro %}

{#- The tag columns, each followed by a comma, from alias `a`. -#}
{% macro tags_of(tags, a) -%}
{% for t in tags %}{{ a }}{{ t | ident }}, {% endfor %}
{%- endmacro %}

{#- `, a.t` for every tag. -#}
{% macro tags_after(tags, a) -%}
{% for t in tags %}, {{ a }}{{ t | ident }}{% endfor %}
{%- endmacro %}

{#- `AND a.t = b.t` for every tag. -#}
{% macro same_tags(tags, a, b) -%}
{% for t in tags %} AND {{ a }}{{ t | ident }} = {{ b }}{{ t | ident }}{% endfor %}
{%- endmacro %}

{#- Running means of `n` hours, right-aligned, for labels `h` in [lo, hi):
    per pollutant, tags and label, the mean of the valid hourly averages of
    hours h-n+1 .. h (`mean`) and how many there are (`n_valid`). A label
    exists when its window holds at least one valid hour and it is not after
    the pollutant's newest loaded hour. One row per hour of a dense grid and
    a ROWS frame: each window is summed afresh and exactly (DuckDB's segment
    tree over DECIMALs), never by adding and subtracting along a running sum
    that drifts. -#}
{% macro running(hourly, newest, params, tags, n, lo, hi) -%}
SELECT pollutant, {{ tags_of(tags, "") }}h, total / n_valid AS mean, n_valid
FROM (
    SELECT g.pollutant, {{ tags_of(tags, "g.") }}g.h,
        sum(v.avg::DECIMAL(38, 18)) OVER w AS total, count(v.avg) OVER w AS n_valid
    FROM (
        SELECT s.pollutant, {{ tags_of(tags, "s.") }}unnest(range(greatest(s.lo, {{ lo }} - {{ n - 1 }}), least(nw.h + 1, {{ hi }}))) AS h
        FROM (
            SELECT pollutant, {{ tags_of(tags, "") }}min(h) AS lo
            FROM {{ hourly }} WHERE {{ valid(params, "") }} GROUP BY ALL
        ) s
        JOIN {{ newest }} nw ON nw.pollutant = s.pollutant
    ) g
    LEFT JOIN (
        SELECT pollutant, {{ tags_of(tags, "") }}h, avg FROM {{ hourly }} WHERE {{ valid(params, "") }}
    ) v ON v.pollutant = g.pollutant{{ same_tags(tags, "v.", "g.") }} AND v.h = g.h
    WINDOW w AS (PARTITION BY g.pollutant{{ tags_after(tags, "g.") }} ORDER BY g.h ROWS BETWEEN {{ n - 1 }} PRECEDING AND CURRENT ROW)
)
WHERE n_valid > 0 AND h >= {{ lo }} AND h < {{ hi }}
{%- endmacro %}

{#- Per pollutant, tags and local day: the maximum of the day's valid 8-hour
    means (`min_valid_8h`, 6 of 8 hours valid), the label of the earliest
    window reaching it, how many valid ones, and the day's length; from
    `windows`, rows of 8-hour means (`hour_start` of the label, `mean`,
    `n_valid`). Each 8-hour mean belongs to the day of its label, "the day
    on which it ends" (2008/50/EC Annex VII: the first window of a day runs
    17:00-01:00, the last 16:00-24:00). -#}
{% macro daily_max_8h(windows, calendar, params, tags) -%}
SELECT pollutant, {{ tags_of(tags, "") }}day,
    max(mean) FILTER (WHERE ok) AS max_8h,
    min(h) FILTER (WHERE ok AND mean = day_max) AS max_8h_h,
    count(*) FILTER (WHERE ok) AS n_valid_8h,
    any_value(hours_in_day) AS hours_in_day
FROM (
    SELECT w.pollutant, {{ tags_of(tags, "w.") }}c.h, w.mean, c.day, c.hours_in_day,
        w.n_valid >= {{ params.min_valid_8h | default(6) }} AS ok,
        max(w.mean) FILTER (WHERE w.n_valid >= {{ params.min_valid_8h | default(6) }})
            OVER (PARTITION BY w.pollutant{{ tags_after(tags, "w.") }}, c.day) AS day_max
    FROM {{ windows }} w
    JOIN {{ calendar }} c ON c.h = epoch_us(w.hour_start) // 3600000000
)
GROUP BY ALL
{%- endmacro %}

{#- Per pollutant, tags and local day: the mean of the day's valid hourly
    averages, their exact sum, how many there are, and the day's length
    (23, 24 or 25). -#}
{% macro daily(hourly, calendar, params, tags) -%}
SELECT hr.pollutant, {{ tags_of(tags, "hr.") }}c.day,
    avg(hr.avg::DECIMAL(38, 18)) FILTER (WHERE {{ valid(params, "hr.") }}) AS mean,
    sum(hr.avg::DECIMAL(38, 18)) FILTER (WHERE {{ valid(params, "hr.") }}) AS valid_sum,
    count(*) FILTER (WHERE {{ valid(params, "hr.") }}) AS n_valid_hours,
    any_value(c.hours_in_day) AS hours_in_day,
    any_value(hr.unit) AS unit
FROM {{ hourly }} hr JOIN {{ calendar }} c ON c.h = hr.h
GROUP BY ALL
{%- endmacro %}

{#- A day's data is valid with 75 % of its hours (18 of 24, 18 of 23,
    19 of 25): 2008/50/EC Annex VII. -#}
{% macro day_complete(n, hours) -%}
{{ n }} >= ceil(0.75 * {{ hours }})
{%- endmacro %}

{#- The rules of `kinds` and `metrics` (lists) as a relation: `instrument`,
    `name` (the pollutant as the rules name it), `pollutant` (its job),
    `kind`, `metric`, `value`, `unit`, `allowed`, `consecutive`, `years`,
    `valid_from`, `valid_to` (DATE), `outlook`. From `params.rules` (the
    spec's `rules:`, checked at load) when set, else rules.sql (see
    there). A rule without `instrument`, `kind`, `metric` or `value`, or
    with an unknown kind or metric (an edit of rules.sql), fails the render
    naming it. -#}
{% macro rules(params, kinds, metrics) -%}
{%- import "rules.sql" as shipped -%}
{%- set origin = "`rules:`" if params.rules is defined else "rules.sql" -%}
{%- set all = params.rules if params.rules is defined else shipped.rules -%}
{%- set ns = namespace(rows=[]) -%}
{%- for r in all -%}
{%- set at = "rule " ~ loop.index ~ " of " ~ origin -%}
{%- if r is not mapping -%}
{{ fail(at ~ " is not a map like {instrument, pollutant, kind, metric, value}") }}
{%- endif -%}
{%- for f in ["instrument", "kind", "metric", "value"] -%}
{%- if r[f] is not defined -%}
{{ fail(at ~ " has no `" ~ f ~ "`") }}
{%- endif -%}
{%- endfor -%}
{%- if r.kind not in ["limit", "target", "information", "alert", "criterion"] -%}
{{ fail(at ~ " (" ~ r.instrument ~ "): `kind` is limit, target, information, alert or criterion, not `" ~ r.kind ~ "`") }}
{%- endif -%}
{%- if r.metric not in ["hourly", "daily_mean", "max_daily_8h_mean", "annual_mean", "aot40"] -%}
{{ fail(at ~ " (" ~ r.instrument ~ "): `metric` is hourly, daily_mean, max_daily_8h_mean, annual_mean or aot40, not `" ~ r.metric ~ "`") }}
{%- endif -%}
{%- if r.kind != "criterion" and r.pollutant is not defined -%}
{{ fail(at ~ " (" ~ r.instrument ~ "): a " ~ r.kind ~ " needs `pollutant`") }}
{%- endif -%}
{%- if (r.consecutive | default(1)) < 1 -%}
{{ fail(at ~ " (" ~ r.instrument ~ "): `consecutive` is 1 or more") }}
{%- endif -%}
{%- if r.kind in kinds and r.metric in metrics -%}
{%- set ns.rows = ns.rows + [r] -%}
{%- endif -%}
{%- endfor -%}
{%- if ns.rows -%}
SELECT * FROM (VALUES
{%- for r in ns.rows %}
    ({{ r.instrument | sqlstr }}, {{ (r.pollutant | default("")) | sqlstr }}, {% if r.pollutant is defined %}{{ job_of(params, r.pollutant) }}{% else %}NULL{% endif %}, {{ r.kind | sqlstr }}, {{ r.metric | sqlstr }}, {{ r.value }}::DOUBLE, {{ ("mg/m3" if r.pollutant | default("") == "co" else ("µg/m3·h" if r.metric == "aot40" else ("" if r.kind == "criterion" else "µg/m3"))) | sqlstr }}, {{ r.allowed | default(0) }}::INTEGER, {{ r.consecutive | default(1) }}::INTEGER, {{ r.years | default(1) }}::INTEGER, DATE {{ (r.valid_from | default("1900-01-01")) | sqlstr }}, DATE {{ (r.valid_to | default("9999-12-31")) | sqlstr }}, {{ "true" if r.outlook | default(false) else "false" }}){% if not loop.last %},{% endif %}
{%- endfor %}
) r(instrument, name, pollutant, kind, metric, value, unit, allowed, consecutive, years, valid_from, valid_to, outlook)
{%- else -%}
SELECT NULL::VARCHAR AS instrument, NULL::VARCHAR AS name, NULL::VARCHAR AS pollutant, NULL::VARCHAR AS kind, NULL::VARCHAR AS metric, NULL::DOUBLE AS value, NULL::VARCHAR AS unit, NULL::INTEGER AS allowed, NULL::INTEGER AS consecutive, NULL::INTEGER AS years, NULL::DATE AS valid_from, NULL::DATE AS valid_to, NULL::BOOLEAN AS outlook WHERE false
{%- endif -%}
{%- endmacro %}

{#- Whether rule `r` (an alias with a dot) judges calendar year `y`: in
    force (its period holds 1 January), or as the outlook of a later rule. -#}
{% macro judges_year(r, y) -%}
(make_date({{ y }}, 1, 1) < {{ r }}valid_to AND (make_date({{ y }}, 1, 1) >= {{ r }}valid_from OR {{ r }}outlook))
{%- endmacro %}

{#- `'in_force'` or `'outlook'`, for a rule `r` judging year `y`. -#}
{% macro basis(r, y) -%}
CASE WHEN make_date({{ y }}, 1, 1) >= {{ r }}valid_from THEN 'in_force' ELSE 'outlook' END
{%- endmacro %}

{#- The hour numbers `[from, to)` of rule `r`'s period, midnights UTC. -#}
{% macro from_h(r) -%}
(({{ r }}valid_from - DATE '1970-01-01')::BIGINT * 24)
{%- endmacro %}
{% macro to_h(r) -%}
(({{ r }}valid_to - DATE '1970-01-01')::BIGINT * 24)
{%- endmacro %}

{#- The local calendar years of the keys, as a relation `(year, first_h,
    hours_in_year)` (`first_h` the number of the year's first UTC hour). -#}
{% macro years_of(years) -%}
{% if not years %}SELECT NULL::INTEGER AS year, NULL::BIGINT AS first_h, NULL::INTEGER AS hours_in_year WHERE false{% else %}SELECT * FROM (VALUES {% for y in years %}({{ y.year }}::INTEGER, {{ y.first_h }}::BIGINT, {{ y.hours }}::INTEGER){% if not loop.last %}, {% endif %}{% endfor %}) y(year, first_h, hours_in_year){% endif %}
{%- endmacro %}
