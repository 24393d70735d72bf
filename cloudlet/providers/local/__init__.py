"""The ``local`` platform: a cloudlet in network namespaces on this host."""
