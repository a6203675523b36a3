-- Key lists filter by app, organization and project and order by creation: one index answers both the page and
-- the count without reading the rows.
DROP INDEX app_keys_by_app;
CREATE INDEX app_keys_by_app ON app_keys (app_id, org_id, project_id, created_at, id);
