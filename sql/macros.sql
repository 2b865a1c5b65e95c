{#- Shared pieces of the hourly templates. -#}

{#- The UTC hour a TIMESTAMPTZ falls in (works without the ICU extension). -#}
{% macro hour_of(col) -%}
to_timestamp(floor(epoch({{ col }}) / 3600) * 3600)
{%- endmacro %}

{#- Distinct minutes with a reading: duplicates within a minute count once. -#}
{% macro minutes_present(col) -%}
count(DISTINCT floor(epoch({{ col }}) / 60))
{%- endmacro %}
