"""django-rq's dashboard (in the admin, at /admin/django_rq/dashboard/) against job hashes anyone who can write to
Redis may have planted or garbled: such a job is left out of listings (DashboardQueue), and a page that must show
one answers 422 saying so (monitoring.admin), never a 500."""

import zlib

from rq.exceptions import DeserializationError

from exchange.channel import CommandQueue

# What reading a forged or garbled job hash raises: bad dates, numbers, encodings, signatures, compressed data.
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, zlib.error, DeserializationError)


class DashboardQueue(CommandQueue):
    """A command queue as the dashboard reads it (``settings.RQ["QUEUE_CLASS"]``, which only django-rq's own
    lookups use): a job whose hash cannot be read, or that was never enqueued, counts as missing, so one bad hash
    does not take down the listing; the agent drops it when it gets to it."""

    def fetch_job(self, job_id):
        try:
            job = super().fetch_job(job_id)
        except UNREADABLE:
            return None
        if job is not None and job.enqueued_at is None:  # the dashboard dates a queue by its first job's
            return None
        return job
