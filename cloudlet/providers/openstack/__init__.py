"""OpenStack support: the openstacksdk provider and the pure Heat renderer.

Nothing here imports openstacksdk at package import, so ``cloudlet export
heat`` (the renderer) works where the SDK's connection is never wanted; the
registry imports ``provider`` only for an ``openstack`` platform.
"""
