-- pg_cron (only in the database named by cron.database_name, postgres), with a hosted project's grants: postgres
-- schedules through cron.schedule()/cron.alter_job() and may read cron.job but not write it directly.
CREATE EXTENSION IF NOT EXISTS pg_cron;
GRANT USAGE ON SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL TABLES IN SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL SEQUENCES IN SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cron TO postgres WITH GRANT OPTION;
REVOKE ALL ON cron.job FROM postgres;
GRANT SELECT ON cron.job TO postgres WITH GRANT OPTION;
REVOKE TRIGGER ON cron.job_run_details FROM postgres;
