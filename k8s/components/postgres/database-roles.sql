-- The database roles of the Pet Store service: the DBA's step, run once per
-- database (and again whenever a password changes) as the RDS master user,
-- connected to the service's database:
--
--   psql -v ON_ERROR_STOP=1 -v dbname=petstore \
--        -v app_role=petstore -v app_password="$APP_PASSWORD" \
--        -v component_role=petstore_component -v component_password="$COMPONENT_PASSWORD" \
--        -f database-roles.sql
--
-- Two login roles. The service's own (DB_USER) owns the database: it
-- migrates the schema, keeps the component registry in a schema of its
-- own, and at every start gives the components' role exactly the tables
-- that components/routes.toml declares. The components' role
-- (DB_COMPONENT_USER) is what every handler component's SQL runs as: it
-- may log in and nothing else here; the service refuses to become ready if
-- it can do more (host/src/storage/postgres/roles.rs). The tests run this
-- same file (tests/support/pg.rs); in a cluster, k8s/database-roles runs it
-- as a one-shot Job.
\set ON_ERROR_STOP 1

-- The roles, made or brought up to date (a re-run changes passwords).
SELECT format('CREATE ROLE %I LOGIN', :'app_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'component_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'component_role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD %L',
              :'app_role', NULLIF(:'app_password', '')) \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD %L',
              :'component_role', NULLIF(:'component_password', '')) \gexec

-- The service's role is a member of the components' role (their
-- privileges are a subset of its own), so that it may end a component's
-- backend that outlived every time limit (pg_terminate_backend).
SELECT format('GRANT %I TO %I', :'component_role', :'app_role') \gexec

-- The components' role is a member of no role (a membership would lend it
-- that role's rights).
SELECT format('REVOKE %I FROM %I', r.rolname, :'component_role')
FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = :'component_role') \gexec

-- The database is the service's: only its two roles connect, and nobody
-- makes temporary tables. Giving it away needs the right to act as the new
-- owner, which RDS's master user (not a superuser) has only as a member.
SELECT format('GRANT %I TO CURRENT_USER', :'app_role')
WHERE NOT pg_has_role(current_user, :'app_role', 'MEMBER') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'dbname', :'app_role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'dbname') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', :'dbname', :'app_role', :'component_role') \gexec
SELECT format('GRANT CREATE, TEMPORARY ON DATABASE %I TO %I', :'dbname', :'app_role') \gexec

-- Schema public: the service's to create in, nobody else's (PostgreSQL 15
-- and later already keep PUBLIC out; earlier ones do not).
SELECT format('ALTER SCHEMA public OWNER TO %I', :'app_role')
WHERE (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public') <> 'pg_database_owner' \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
