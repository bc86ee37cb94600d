"""Webhooks: endpoints, signing, the SSRF guard and the delivery dispatcher (`tally worker`)."""
