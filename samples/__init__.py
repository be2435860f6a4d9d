"""Sample business applications an operator can host in every application of a worker (APP_HOSTED_APPS,
APP_HOSTED_URLCONF); ``bin/cluster`` hosts samples.notes unless told otherwise."""
