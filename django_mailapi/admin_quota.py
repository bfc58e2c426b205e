"""Admin for OrgQuota and UsageCounter (see the quota issue)."""
