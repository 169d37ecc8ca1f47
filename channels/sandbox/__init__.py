"""Development stand-in for Twilio: a local server speaking the part of Twilio's REST API the
service uses (messages, media, typing, status callbacks, the Content API), for tests and the
demo. Nothing in the product imports it.
"""
