-- A project's traffic per API key (the dashboard's API Keys page) is counted from
-- these indexes alone, without visiting every transcript and usage row of the project.
CREATE INDEX transcripts_project_key ON transcripts (project_id, api_key_id);
CREATE INDEX usage_events_project_key ON usage_events (project_id, api_key_id, audio_ms);
