"""Media plane: RTP/RTCP framing, fast UDP endpoints, port allocation, relay.

Imports point downwards only: nothing here knows about SIP, bridges or dispatch.
"""
