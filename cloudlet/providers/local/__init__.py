"""The ``local`` platform: a whole cloudlet in network namespaces on this Linux host."""
