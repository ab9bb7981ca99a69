-- The storage schema (Supabase Storage): buckets and object rows; the files themselves live in S3.
-- Owned by supabase_storage_admin, as on the platform.
CREATE TABLE IF NOT EXISTS storage.buckets (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    owner uuid,
    public boolean DEFAULT false,
    file_size_limit bigint,
    allowed_mime_types text[],
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);
ALTER TABLE storage.buckets OWNER TO supabase_storage_admin;

CREATE TABLE IF NOT EXISTS storage.objects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket_id text REFERENCES storage.buckets (id),
    name text,
    owner uuid,
    metadata jsonb,
    path_tokens text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
    version text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    last_accessed_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS bucketid_objname ON storage.objects (bucket_id, name);
ALTER TABLE storage.objects OWNER TO supabase_storage_admin;

ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;

CREATE TABLE IF NOT EXISTS storage.migrations (
    id integer PRIMARY KEY,
    name varchar(100) NOT NULL UNIQUE,
    hash varchar(40) NOT NULL,
    executed_at timestamptz DEFAULT current_timestamp
);
ALTER TABLE storage.migrations OWNER TO supabase_storage_admin;
INSERT INTO storage.migrations (id, name, hash) VALUES
    (0, 'create-migrations-table', 'e18db593bcde2aca2a408c4d1100f6abba2195df'),
    (1, 'initialmigration', '6ab16121fbaa08bbd11b712d05f358f9b555d777'),
    (2, 'storage-schema', '5c7968fd083fcea04050c1b7f6253c9771b99011'),
    (3, 'pathtoken-column', '2cb1b0004b817b29d5b0a971af16bafeede4b70d')
ON CONFLICT DO NOTHING;

-- The helpers Storage policies call (storage.foldername(name) is the usual per-folder rule); the platform's own.
CREATE OR REPLACE FUNCTION storage.foldername(name text) RETURNS text[]
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT (string_to_array(name, '/'))[1:cardinality(string_to_array(name, '/')) - 1]
$$;

CREATE OR REPLACE FUNCTION storage.filename(name text) RETURNS text
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT (string_to_array(name, '/'))[cardinality(string_to_array(name, '/'))]
$$;

CREATE OR REPLACE FUNCTION storage.extension(name text) RETURNS text
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN storage.filename(name) LIKE '%.%'
                THEN regexp_replace(storage.filename(name), '^.*\.', '') ELSE '' END
$$;

-- A trigger of the platform's own on storage.objects (its function is the platform's, in storage): a restore
-- must leave it alone and must not count it as the app's.
CREATE OR REPLACE FUNCTION storage.update_updated_at_column() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS update_objects_updated_at ON storage.objects;
CREATE TRIGGER update_objects_updated_at BEFORE UPDATE ON storage.objects
    FOR EACH ROW EXECUTE FUNCTION storage.update_updated_at_column();

ALTER FUNCTION storage.foldername(text) OWNER TO supabase_storage_admin;
ALTER FUNCTION storage.filename(text) OWNER TO supabase_storage_admin;
ALTER FUNCTION storage.extension(text) OWNER TO supabase_storage_admin;
ALTER FUNCTION storage.update_updated_at_column() OWNER TO supabase_storage_admin;
