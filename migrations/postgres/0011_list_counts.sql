-- Each parent row counts its children, kept in the append transaction with the rows themselves, so that a list's
-- total is one row read instead of a COUNT over every child (10,000 keys of one app cost a scan per page).
ALTER TABLE orgs ADD COLUMN project_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN app_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN key_count BIGINT NOT NULL DEFAULT 0;
UPDATE orgs SET project_count = (SELECT COUNT(*) FROM projects WHERE projects.org_id = orgs.id);
UPDATE projects SET app_count = (SELECT COUNT(*) FROM apps WHERE apps.project_id = projects.id);
UPDATE apps SET key_count = (SELECT COUNT(*) FROM app_keys WHERE app_keys.app_id = apps.id);
