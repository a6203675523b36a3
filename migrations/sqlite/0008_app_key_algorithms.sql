-- Application keys gain an algorithm (the API's KeyAlgorithm number) and whether the caller supplied the public
-- key. Keys added before have neither in their events: they are RSA keys keymint generated, hence the defaults.
ALTER TABLE app_keys ADD COLUMN algorithm INTEGER NOT NULL DEFAULT 1;
ALTER TABLE app_keys ADD COLUMN supplied BOOLEAN NOT NULL DEFAULT FALSE;
