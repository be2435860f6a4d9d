class HostedDatabaseRouter:
    """Keeps hosted applications' databases to the hosted Django apps, and this process's own tables out of them."""

    def allow_migrate(self, db, app_label, **hints):
        from .provisioning import hosted_labels, is_hosted_alias

        if is_hosted_alias(db):
            return app_label in hosted_labels()
        return None
