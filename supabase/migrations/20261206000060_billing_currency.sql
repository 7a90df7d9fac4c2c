-- Money in one currency. Every amount in agent_sms (provider_cost, voipia_margin and
-- billed_cost, which adds them) is in the billing currency, so that no total anywhere
-- adds two currencies. A provider price in another currency (a Twilio account that
-- prices in USD) is kept as it was given, for audit, and converted with the European
-- Central Bank's reference rate of the SMS's send date, or the last one published before
-- it, never older than max_rate_age. Without such a rate the SMS stays unpriced
-- (provider_cost NULL) until one comes (private.price_pending_sms, after each rates run).

-- One row: what the service bills in. The currency may change only while no SMS is
-- recorded in another.
CREATE TABLE private.billing_settings (
    only_row      boolean  PRIMARY KEY DEFAULT true CONSTRAINT billing_settings_one_row CHECK (only_row),
    currency      text     NOT NULL DEFAULT 'EUR'
        CONSTRAINT billing_settings_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    max_rate_age  interval NOT NULL DEFAULT interval '7 days'
        CONSTRAINT billing_settings_max_rate_age_check
        CHECK (max_rate_age BETWEEN interval '1 day' AND interval '31 days')
);
INSERT INTO private.billing_settings DEFAULT VALUES;

CREATE FUNCTION private.billing_currency_kept() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- No SMS may be recorded in the old currency while this one changes.
    LOCK TABLE public.agent_sms IN SHARE MODE;
    IF EXISTS (SELECT FROM public.agent_sms WHERE currency <> NEW.currency) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP409', HINT = 'currency',
            MESSAGE = 'SMS are recorded in another currency: the billing currency stays';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER billing_currency_kept BEFORE UPDATE OF currency ON private.billing_settings
    FOR EACH ROW WHEN (NEW.currency IS DISTINCT FROM OLD.currency)
    EXECUTE FUNCTION private.billing_currency_kept();

-- The ECB's reference rates: how many units of the currency one euro buys that day.
CREATE TABLE private.exchange_rates (
    currency    text          NOT NULL CONSTRAINT exchange_rates_currency_check
        CHECK (currency ~ '^[A-Z]{3}$' AND currency <> 'EUR'),
    rate_date   date          NOT NULL,
    rate        numeric(18,8) NOT NULL CONSTRAINT exchange_rates_rate_check
        CHECK (rate > 0 AND rate < 100000000),  -- NaN is above every number: excluded too
    stored_at   timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (currency, rate_date)
);

-- What the provider asked, as it asked it, and how it was converted.
ALTER TABLE public.agent_sms
    ADD COLUMN provider_amount    numeric(10,4)
        CONSTRAINT agent_sms_provider_amount_check CHECK (provider_amount >= 0 AND provider_amount < 1000000),
    ADD COLUMN provider_currency  text
        CONSTRAINT agent_sms_provider_currency_check CHECK (provider_currency ~ '^[A-Z]{3}$'),
    ADD COLUMN exchange_rate      numeric(18,8)
        CONSTRAINT agent_sms_exchange_rate_check CHECK (exchange_rate > 0 AND exchange_rate < 100000000),
    ADD COLUMN exchange_rate_date date;
-- The SMS waiting for a rate: few, and found without reading the table.
CREATE INDEX idx_agent_sms_waiting_for_rate ON public.agent_sms (sent_at)
    WHERE provider_cost IS NULL AND provider_amount IS NOT NULL;
COMMENT ON COLUMN public.agent_sms.provider_amount IS
    'The provider''s price as it gave it (absolute value), in provider_currency.';
COMMENT ON COLUMN public.agent_sms.exchange_rate IS
    'Billing-currency units per provider_currency unit, from the ECB rates of exchange_rate_date.';

-- SECURITY DEFINER: a signed-in user's statement and KPIs name the currency too.
CREATE FUNCTION private.billing_currency() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT currency FROM private.billing_settings $$;

-- An SMS recorded without a currency is in the billing currency (the seed's default
-- was EUR whatever the service bills in).
ALTER TABLE public.agent_sms ALTER COLUMN currency SET DEFAULT private.billing_currency();

-- Billing-currency units one unit of p_currency is worth, by the rates of the last day
-- on or before p_on that has both currencies' rates, within max_rate_age; no row when
-- there is none.
CREATE FUNCTION private.billing_rate(p_currency text, p_on date)
RETURNS TABLE (rate numeric, rate_date date)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH b AS (SELECT currency, max_rate_age FROM private.billing_settings)
    SELECT 1::numeric, p_on FROM b WHERE b.currency = p_currency
    UNION ALL
    (SELECT coalesce(bill.rate, 1) / coalesce(given.rate, 1), d.rate_date
     FROM b
     CROSS JOIN LATERAL (
         SELECT DISTINCT r.rate_date FROM private.exchange_rates AS r
         WHERE r.currency IN (p_currency, b.currency) AND r.rate_date <= p_on
           AND r.rate_date >= p_on - b.max_rate_age
     ) AS d
     LEFT JOIN private.exchange_rates AS given
         ON given.currency = p_currency AND given.rate_date = d.rate_date
     LEFT JOIN private.exchange_rates AS bill
         ON bill.currency = b.currency AND bill.rate_date = d.rate_date
     WHERE b.currency <> p_currency
       AND (p_currency = 'EUR' OR given.rate IS NOT NULL)
       AND (b.currency = 'EUR' OR bill.rate IS NOT NULL)
     ORDER BY d.rate_date DESC
     LIMIT 1)
$$;

-- Every row is in the billing currency. A row given a provider cost in another currency
-- (ingest_sms, when n8n sends one) keeps it as the provider's amount and is converted,
-- or left unpriced until a rate comes. The rule for both inserting and pricing.
CREATE FUNCTION private.agent_sms_in_billing_currency() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_billing text := private.billing_currency();
    v_rate record;
BEGIN
    -- (A negative cost is left to the seed's own CHECK, which refuses it by its name.)
    IF TG_OP = 'INSERT' AND upper(coalesce(NEW.currency, v_billing)) <> v_billing
       AND coalesce(NEW.voipia_margin, 0) <> 0 THEN
        -- `currency` names the provider cost's currency; Voipia's margin is always in the
        -- billing currency, and a margin given beside another currency is ambiguous.
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'voipia_margin',
            MESSAGE = 'voipia_margin is in the billing currency: send it without a currency, or send no margin';
    END IF;
    IF TG_OP = 'INSERT' AND NEW.provider_cost >= 0 AND NEW.provider_amount IS NULL THEN
        -- A cost given with the SMS (by n8n), in its currency: kept as given, and in
        -- another currency than the billing one, priced like any other.
        NEW.provider_amount := NEW.provider_cost;
        NEW.provider_currency := upper(coalesce(NEW.currency, v_billing));
        IF NEW.provider_currency = v_billing THEN
            NEW.exchange_rate := 1;
            NEW.exchange_rate_date := (NEW.sent_at AT TIME ZONE 'UTC')::date;
        ELSE
            NEW.provider_cost := NULL;
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.currency := v_billing;
    END IF;
    IF NEW.currency IS DISTINCT FROM v_billing THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'currency',
            MESSAGE = 'every amount is in the billing currency';
    END IF;
    IF NEW.provider_cost IS NULL AND NEW.provider_amount IS NOT NULL THEN
        SELECT r.rate, r.rate_date INTO v_rate
        FROM private.billing_rate(NEW.provider_currency, (NEW.sent_at AT TIME ZONE 'UTC')::date) AS r;
        IF FOUND THEN
            NEW.provider_cost := round(NEW.provider_amount * v_rate.rate, 4);
            NEW.exchange_rate := v_rate.rate;
            NEW.exchange_rate_date := v_rate.rate_date;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agent_sms_in_billing_currency
    BEFORE INSERT OR UPDATE OF currency, provider_cost, provider_amount, provider_currency
    ON public.agent_sms
    FOR EACH ROW EXECUTE FUNCTION private.agent_sms_in_billing_currency();

-- A provider's price for an SMS that has none yet: kept as given, converted when a rate
-- allows (the trigger above). A price already given, converted or waiting for a rate,
-- is never replaced. Twilio gives prices negative; the absolute value counts.
-- Whether this call priced the SMS in the billing currency.
CREATE FUNCTION private.price_sms(p_sid text, p_price numeric, p_unit text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_priced boolean;
BEGIN
    IF p_price IS NULL OR NOT (abs(p_price) < 1000000) THEN  -- NaN and Infinity too
        RETURN false;
    END IF;
    UPDATE public.agent_sms
    SET provider_amount = abs(p_price),
        provider_currency = upper(coalesce(p_unit, private.billing_currency()))
    WHERE provider_message_sid = p_sid AND provider_cost IS NULL AND provider_amount IS NULL
    RETURNING provider_cost IS NOT NULL INTO v_priced;
    RETURN coalesce(v_priced, false);
END
$$;

-- Prices for many SMS at once (reconcile, from Twilio's Messages list): a JSON array of
-- {"sid", "price", "price_unit"}. Returns how many SMS it priced.
CREATE FUNCTION public.record_sms_prices(p_prices jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_priced integer := 0;
    v_item jsonb;
BEGIN
    IF jsonb_typeof(p_prices) IS DISTINCT FROM 'array' OR jsonb_array_length(p_prices) > 5000 THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_prices',
            MESSAGE = 'from 0 to 5000 prices, as a JSON array';
    END IF;
    FOR v_item IN SELECT value FROM jsonb_array_elements(p_prices) LOOP
        IF coalesce(jsonb_typeof(v_item -> 'price'), 'null') NOT IN ('number', 'string')
           OR coalesce(v_item ->> 'price_unit', '') !~ '^[A-Za-z]{3}$' THEN
            CONTINUE;  -- not priced yet
        END IF;
        BEGIN
            IF private.price_sms(v_item ->> 'sid', (v_item ->> 'price')::numeric,
                                 v_item ->> 'price_unit') THEN
                v_priced := v_priced + 1;
            END IF;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            CONTINUE;  -- not a price: Twilio's answer, not ours to fail on
        END;
    END LOOP;
    RETURN v_priced;
END
$$;

-- The SMS whose provider amount waits for a rate, converted now if one has come: after
-- each rates run. Returns how many got a price, and how many still wait.
CREATE FUNCTION public.price_pending_sms() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_priced integer;
BEGIN
    -- Setting a column to itself fires the trigger, which converts: only the rows a rate
    -- now serves, so that the others are not written again every run.
    WITH touched AS (
        UPDATE public.agent_sms AS s SET provider_amount = s.provider_amount
        WHERE s.provider_cost IS NULL AND s.provider_amount IS NOT NULL
          AND EXISTS (SELECT FROM private.billing_rate(
                          s.provider_currency, (s.sent_at AT TIME ZONE 'UTC')::date))
        RETURNING s.provider_cost
    )
    SELECT count(provider_cost) INTO v_priced FROM touched;
    RETURN jsonb_build_object(
        'priced', v_priced,
        'waiting', (SELECT count(*) FROM public.agent_sms
                    WHERE provider_cost IS NULL AND provider_amount IS NOT NULL),
        'oldest_waiting', (SELECT min(sent_at) FROM public.agent_sms
                           WHERE provider_cost IS NULL AND provider_amount IS NOT NULL));
END
$$;

-- The rates a run fetched: a JSON array of {"currency", "date", "rate"} (units per
-- euro). A rate already stored for a day is kept: the ECB does not revise them.
CREATE FUNCTION public.store_exchange_rates(p_rates jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_stored integer;
BEGIN
    IF jsonb_typeof(p_rates) IS DISTINCT FROM 'array' OR jsonb_array_length(p_rates) > 20000 THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_rates',
            MESSAGE = 'from 0 to 20000 rates, as a JSON array';
    END IF;
    -- The ECB publishes on working days, since 1999-01-04, and never ahead: a rate for
    -- any other day (which would price a weekend's SMS) is no reference rate.
    IF EXISTS (SELECT FROM jsonb_to_recordset(p_rates) AS r(date date)
               WHERE r.date IS NULL OR r.date < date '1999-01-04'
                  OR r.date > current_date + 1 OR extract(isodow FROM r.date) > 5) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_rates',
            MESSAGE = 'a reference rate is of a working day, from 1999-01-04 to tomorrow';
    END IF;
    -- It never revises one either: a different rate for a day stored is refused.
    IF EXISTS (SELECT FROM jsonb_to_recordset(p_rates) AS r(currency text, date date, rate numeric)
               JOIN private.exchange_rates AS e
                 ON e.currency = r.currency AND e.rate_date = r.date
               WHERE e.rate <> r.rate) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP409', HINT = 'p_rates',
            MESSAGE = 'a rate differs from the one stored for its day';
    END IF;
    INSERT INTO private.exchange_rates (currency, rate_date, rate)
    SELECT r.currency, r.date, r.rate
    FROM jsonb_to_recordset(p_rates) AS r(currency text, date date, rate numeric)
    WHERE r.currency <> 'EUR'
    ON CONFLICT (currency, rate_date) DO NOTHING;
    GET DIAGNOSTICS v_stored = ROW_COUNT;
    RETURN v_stored;
END
$$;
