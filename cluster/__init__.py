"""The local cluster: every role of App Supervisor on one machine, started by ``bin/cluster`` (see launcher)."""
