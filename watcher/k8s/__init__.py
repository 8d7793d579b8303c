"""Kubernetes: the API client, this node's pods, pid cgroups, Events and the Node condition."""
