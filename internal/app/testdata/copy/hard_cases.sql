-- The Copy section of failure-catalogue.md as one schema: every case must arrive bit-exact.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE SCHEMA "Odd Schema";

-- Built-in types with edge values.
CREATE TABLE types (
    id        int PRIMARY KEY,
    n         numeric,
    f8        float8,
    f4        float4,
    d         date,
    ts        timestamp,
    tstz      timestamptz,
    iv        interval,
    b         bytea,
    t         text,
    j         jsonb,
    js        json,
    ia        int[],
    ta        text[],
    u         uuid,
    inet_v    inet,
    bits      bit varying(16),
    tr        tstzrange,
    x         xml,
    mo        money,
    c         "char",
    tv        tsvector,
    pt        point
);
INSERT INTO types VALUES
 (1, 'NaN', 'NaN', 'NaN', 'infinity', 'infinity', 'infinity', '1 year 2 mons 3 days 04:05:06.789', '\x00', 'plain', '{"a": [1, 2.50, null]}', '{"dup": 1, "dup": 2}', '{{1,NULL},{3,4}}', '{"a b",NULL,"c\"d","",NULL}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1/8', B'1010', '[2020-01-01,2021-01-01)', '<a>x</a>', 12.34, 'x', 'a:1 b:2', '(1.5,-2)'),
 (2, 'Infinity', 'Infinity', '-Infinity', '-infinity', '-infinity', '-infinity', '-1 day', '\x000102ff00', 'Grüße, 世界, مرحبا, 🎉', '[]', 'null', '{}', '{}', NULL, '::1', B'', 'empty', NULL, -0.01, 'y', '', '(0,0)'),
 (3, '-Infinity', '-0', '-0', '0044-03-15 BC', '0044-03-15 12:00:00 BC', '0001-01-01 00:00:00+00 BC', '0', '\x', E'tab\there\nnewline \\ backslash', '{"k": "\u00e9"}', '"str"', '{{{1}},{{2}}}', '{{"x","y"},{NULL,"z"}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, '123456789012345678901234567890.123456789012345678901234567890', 1.7976931348623157e308, 3.4028235e38, '5874897-12-31', '294276-12-31 23:59:59.999999', '2000-02-29 23:59:59.999999+14', '178000000 years', decode(repeat('00ff', 5000), 'hex'), repeat('long text ', 10000), NULL, NULL, '{1,2,3}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, '-0.000000000000000000000000000001', 5e-324, 1.4e-45, '4713-01-01 BC', '4713-01-01 00:00:00 BC', '1970-01-01 00:00:00+00', '-178000000 years', NULL, '', NULL, NULL, '[0:1]={7,8}', '{NULL}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (6, 0.1, 0.1, 0.1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- User-defined types (text format only: their OIDs differ between servers).
CREATE TABLE udt (
    id   int PRIMARY KEY,
    m    mood,
    ms   mood[],
    p    posint,
    pr   pair,
    prs  pair[]
);
INSERT INTO udt VALUES (1, 'happy', '{sad,NULL,ok}', 7, ROW(1, 'x,y'), ARRAY[ROW(2, NULL)::pair, ROW(NULL, '"q"')::pair]),
                       (2, NULL, NULL, NULL, NULL, NULL);

-- Dropped columns (holes in attnum), generated and identity columns.
CREATE TABLE holes (
    id     int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gone1  text,
    keep   text,
    gone2  int,
    total  int,
    doubled int GENERATED ALWAYS AS (total * 2) STORED
);
INSERT INTO holes (gone1, keep, gone2, total) SELECT 'g', 'k' || i, i, i FROM generate_series(1, 50) i;
ALTER TABLE holes DROP COLUMN gone1, DROP COLUMN gone2;
ALTER TABLE holes ADD COLUMN added text DEFAULT 'late';
DELETE FROM holes WHERE id % 7 = 0;

-- Mixed case, reserved words, spaces.
CREATE TABLE "Odd Schema"."Order" (
    "select" int PRIMARY KEY,
    "From"   text,
    "user name" text,
    "quote""d" text
);
INSERT INTO "Odd Schema"."Order" VALUES (1, 'a', 'b', 'c'), (2, NULL, 'x"y', E'\\');
CREATE TABLE "UPPER" ("ID" bigint PRIMARY KEY, v text);
INSERT INTO "UPPER" SELECT i, md5(i::text) FROM generate_series(1, 100) i;

-- Partitioned table with a default partition and a sub-partitioned branch.
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, payload text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY HASH (id);
CREATE TABLE events_2024_h0 PARTITION OF events_2024 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_2024_h1 PARTITION OF events_2024 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE events_other PARTITION OF events DEFAULT;
CREATE INDEX events_payload ON events (payload);
CREATE TABLE no_partitions (id int PRIMARY KEY) PARTITION BY LIST (id);
INSERT INTO events SELECT i, date '2023-01-01' + (i % 900), 'e' || i FROM generate_series(1, 3000) i;

-- A table big enough to be split into several ctid-range chunks, with foreign keys to it.
CREATE TABLE big (id bigint PRIMARY KEY, grp int NOT NULL, filler text NOT NULL);
INSERT INTO big SELECT i, i % 100, repeat(md5(i::text), 4) FROM generate_series(1, 60000) i;
CREATE INDEX big_grp ON big (grp);
CREATE TABLE child (id serial PRIMARY KEY, big_id bigint REFERENCES big (id), note text UNIQUE);
INSERT INTO child (big_id, note) SELECT i, 'n' || i FROM generate_series(1, 500) i;

-- Replica identity FULL without a key, with identical duplicate rows.
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup'), (2, NULL);

-- Unlogged table (copied, not followed) and a materialized view (refreshed at the end).
CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
INSERT INTO scratch VALUES (1, 'u');
CREATE MATERIALIZED VIEW big_groups AS SELECT grp, count(*) AS n FROM big GROUP BY grp;
CREATE UNIQUE INDEX big_groups_grp ON big_groups (grp);

-- Sequences used and not used, a trigger, a view.
CREATE SEQUENCE free_seq START 100;
SELECT nextval('free_seq'), nextval('free_seq');
CREATE SEQUENCE unused_seq;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := NEW.note || '!'; RETURN NEW; END $$;
CREATE TRIGGER child_touch BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW big_view AS SELECT id FROM big WHERE grp = 1;
COMMENT ON TABLE big IS 'semi; colon and ''quotes''';

-- A large object: not copied, but warned about.
SELECT lo_from_bytea(0, 'blob');

-- A foreign table: its definition is copied, its rows stay where they are.
CREATE EXTENSION postgres_fdw;
CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '1', dbname 'none');
CREATE FOREIGN TABLE remote_things (id int, name text) SERVER elsewhere;
