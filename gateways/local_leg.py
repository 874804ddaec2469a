"""In-dialog re-offers on a leg whose media the hub itself answers (rooms, the queue,
legs the hub dialled): one implementation for all three."""

from __future__ import annotations

from collections.abc import Callable

from bridges.model import Leg, LegState
from media.engine import MediaLeg
from signaling.dialog import Dialog
from signaling.errors import ParseError
from signaling.message import Request, make_response
from signaling.transaction import Address, ServerTransaction
from signaling.transport import SipTransport

from .media_sdp import SdpSession, apply_negotiated, extract_sdp


def answer_reoffer(transport: SipTransport, tx: ServerTransaction, request: Request, *,
                   leg: Leg, media: MediaLeg, sdp: SdpSession, dialog: Dialog, dest: Address,
                   reply: Callable[..., None]) -> None:
    """Answer a re-INVITE/UPDATE ourselves: new address, codec or direction (hold)."""
    offer = extract_sdp(request)
    if offer is None:
        reply(tx, 488, "An SDP offer is required")
        return
    try:
        answer, neg = sdp.answer(offer, media.pair.rtp_port)
    except ParseError as exc:
        reply(tx, 488, exc.reason)
        return
    apply_negotiated(media, neg)
    dialog.update_target(request)
    if neg.direction in ("sendonly", "inactive") and leg.state is LegState.UP:
        leg.set_state(LegState.HELD, neg.direction)
    elif neg.direction in ("sendrecv", "recvonly") and leg.state is LegState.HELD:
        leg.set_state(LegState.UP, "resumed")
    transport.respond(tx, make_response(request, 200, to_tag=tx.to_tag or None, body=answer,
                                        headers=(
        ("Contact", f"<{transport.contact_uri(dest, 'hub')}>"),
        ("Content-Type", "application/sdp"))))
