-- agent_sms: every SMS Voipia's agents send through n8n and Twilio.
-- Columns, constraints and indexes follow the reference schema
-- (docs/sms_tracking_schema.md) name for name; what goes beyond it says why.
CREATE TABLE public.agent_sms (
    id                    uuid          NOT NULL DEFAULT gen_random_uuid(),
    deployment_id         uuid          NOT NULL,
    call_id               uuid,
    prospect_id           uuid,
    sequence_id           uuid,
    phone_number          text          NOT NULL,
    first_name            text,
    last_name             text,
    message_content       text          NOT NULL,
    message_type          text                   DEFAULT 'transactional',
    character_count       integer       GENERATED ALWAYS AS (length(message_content)) STORED,
    provider              text                   DEFAULT 'twilio',
    provider_message_sid  text,
    provider_status       text,
    status                text                   DEFAULT 'sent',
    sent_at               timestamptz   NOT NULL,
    delivered_at          timestamptz,
    failed_at             timestamptz,
    failure_reason        text,
    provider_cost         numeric(10, 4),
    voipia_margin         numeric(10, 4)         DEFAULT 0,
    billed_cost           numeric(10, 4) GENERATED ALWAYS AS (provider_cost + voipia_margin) STORED,
    currency              text                   DEFAULT 'EUR',
    workflow_id           text,
    workflow_execution_id text,
    metadata              jsonb                  DEFAULT '{}'::jsonb,
    created_at            timestamptz            DEFAULT now(),
    updated_at            timestamptz            DEFAULT now(),

    CONSTRAINT agent_sms_pkey PRIMARY KEY (id),
    CONSTRAINT agent_sms_deployment_id_fkey FOREIGN KEY (deployment_id)
        REFERENCES public.agent_deployments (id) ON DELETE CASCADE,
    CONSTRAINT agent_sms_call_id_fkey FOREIGN KEY (call_id)
        REFERENCES public.agent_calls (id) ON DELETE SET NULL,
    CONSTRAINT agent_sms_prospect_id_fkey FOREIGN KEY (prospect_id)
        REFERENCES public.agent_arthur_prospects (id) ON DELETE SET NULL,
    CONSTRAINT agent_sms_sequence_id_fkey FOREIGN KEY (sequence_id)
        REFERENCES public.agent_arthur_prospect_sequences (id) ON DELETE SET NULL,
    CONSTRAINT agent_sms_provider_message_sid_key UNIQUE (provider_message_sid),
    CONSTRAINT agent_sms_message_type_check
        CHECK (message_type IN ('transactional', 'marketing', 'notification', 'appointment_reminder')),
    CONSTRAINT agent_sms_provider_status_check
        CHECK (provider_status IN ('queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'unknown')),
    CONSTRAINT agent_sms_status_check
        CHECK (status IN ('sent', 'delivered', 'failed')),
    CONSTRAINT agent_sms_provider_cost_check CHECK (provider_cost >= 0),
    CONSTRAINT agent_sms_voipia_margin_check CHECK (voipia_margin >= 0),
    -- Beyond the seed. Erasure finds a number by equality, in the database and through
    -- the archive's index: every writer, not only ingest, stores it in the one form.
    CONSTRAINT agent_sms_phone_number_e164_check CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    -- NaN is a numeric, and greater than every number: it passes ">= 0", and would turn a
    -- client's total cost into NaN.
    CONSTRAINT agent_sms_amounts_finite_check
        CHECK (provider_cost <> 'NaN' AND voipia_margin <> 'NaN')
);

COMMENT ON TABLE public.agent_sms IS
    'Every SMS sent by Voipia AI agents via n8n workflows; one row per Twilio Message SID.';

-- Planner statistics never sample a person: ANALYZE keeps the most common values and a
-- histogram of every column it samples, where an erased number, name or text would
-- outlive the erasure. No query plans on their distribution.
ALTER TABLE public.agent_sms
    ALTER COLUMN phone_number SET STATISTICS 0,
    ALTER COLUMN first_name SET STATISTICS 0,
    ALTER COLUMN last_name SET STATISTICS 0,
    ALTER COLUMN message_content SET STATISTICS 0,
    ALTER COLUMN metadata SET STATISTICS 0;

CREATE INDEX idx_agent_sms_deployment_sent_at ON public.agent_sms (deployment_id, sent_at DESC);
CREATE INDEX idx_agent_sms_status ON public.agent_sms (status)
    WHERE status IN ('delivered', 'failed');
CREATE INDEX idx_agent_sms_call_id ON public.agent_sms (call_id)
    WHERE call_id IS NOT NULL;
CREATE INDEX idx_agent_sms_provider_sid ON public.agent_sms (provider_message_sid)
    WHERE provider_message_sid IS NOT NULL;
CREATE INDEX idx_agent_sms_deployment_cost ON public.agent_sms (deployment_id, billed_cost DESC);
CREATE INDEX idx_agent_sms_prospect ON public.agent_sms (prospect_id)
    WHERE prospect_id IS NOT NULL;
CREATE INDEX idx_agent_sms_sequence ON public.agent_sms (sequence_id)
    WHERE sequence_id IS NOT NULL;
-- Beyond the seed. Erasure and the contact timeline look up by number. A hash index:
-- it holds hash codes, where a B-tree keeps key values in inner pages and page bounds
-- that no VACUUM removes, an erased number among them.
CREATE INDEX idx_agent_sms_phone_number ON public.agent_sms USING hash (phone_number);
-- Beyond the seed. Archiving walks the table oldest first.
CREATE INDEX idx_agent_sms_sent_at ON public.agent_sms (sent_at, id);

CREATE FUNCTION public.agent_sms_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER agent_sms_updated_at
    BEFORE UPDATE ON public.agent_sms
    FOR EACH ROW EXECUTE FUNCTION public.agent_sms_touch_updated_at();
