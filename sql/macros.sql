{#- Shared pieces of the hourly templates. -#}

{#- The UTC hour a TIMESTAMPTZ falls in. Integer microseconds, because the
    embedded DuckDB has no ICU extension (date_trunc on TIMESTAMPTZ needs it). -#}
{% macro hour_of(col) -%}
to_timestamp(epoch_us({{ col }}) // 3600000000 * 3600)
{%- endmacro %}

{#- Distinct minutes with a reading: duplicates within a minute count once. -#}
{% macro minutes_present(col) -%}
count(DISTINCT epoch_us({{ col }}) // 60000000)
{%- endmacro %}
