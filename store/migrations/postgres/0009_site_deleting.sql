-- `site.delete` marks a site `deleting` while it removes it from its server, then deletes the
-- row (the tenant API's DELETE /api/v1/sites/{id}).
ALTER TABLE sites DROP CONSTRAINT sites_status_check;
ALTER TABLE sites ADD CONSTRAINT sites_status_check
    CHECK (status IN ('pending', 'active', 'failed', 'deleting'));
