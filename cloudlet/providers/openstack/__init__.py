"""OpenStack support. The Heat renderer is pure; the SDK provider comes later."""
