{#-
  exceedances (grain: year; depends_on: exceedance_days). Per pollutant,
  station, local calendar year and limit value: the year's valid values
  (`n_values`), how many are strictly above the limit (`n_exceedances`),
  how many the law allows (`allowed`: times a calendar year), and
  `over_allowed`. The sums of `exceedance_days` over the year's days (see
  there for the rules, their `instrument` and `basis`). The ozone target's
  days, counted over three years, are `o3_target_days`.
-#}
{%- if "exceedance_days" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` adds up `exceedance_days`: set `depends_on: [exceedance_days]`") }}
{%- endif -%}
{% import "products.sql" as p -%}
SELECT *, n_exceedances > allowed AS over_allowed
FROM (
    SELECT pollutant, {{ p.tags_of(tags, "") }}year(day)::INTEGER AS year, instrument, basis, metric,
        limit_value, unit, allowed,
        sum(n_values)::BIGINT AS n_values,
        sum(n_exceedances)::BIGINT AS n_exceedances
    FROM {{ inputs.exceedance_days }}
    WHERE year(day) >= {{ keys_from }} AND year(day) < {{ keys_to }}
    GROUP BY ALL
)
