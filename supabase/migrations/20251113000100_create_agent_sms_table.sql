-- agent_sms: every SMS Voipia's agents send through n8n and Twilio.
-- Columns, constraints and indexes follow the reference schema
-- (docs/sms_tracking_schema.md) name for name.
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
    CONSTRAINT agent_sms_voipia_margin_check CHECK (voipia_margin >= 0)
);

COMMENT ON TABLE public.agent_sms IS
    'Every SMS sent by Voipia AI agents via n8n workflows; one row per Twilio Message SID.';

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
-- Beyond the seed: GDPR erasure and the per-contact timeline both look up by number.
CREATE INDEX idx_agent_sms_phone_number ON public.agent_sms (phone_number);

CREATE FUNCTION public.agent_sms_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Trigger functions are never called directly; keep them off the API surface.
REVOKE EXECUTE ON FUNCTION public.agent_sms_touch_updated_at() FROM PUBLIC, anon, authenticated;

CREATE TRIGGER agent_sms_updated_at
    BEFORE UPDATE ON public.agent_sms
    FOR EACH ROW EXECUTE FUNCTION public.agent_sms_touch_updated_at();
