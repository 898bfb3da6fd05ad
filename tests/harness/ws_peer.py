"""Independent WebSocket peer for the streaming tests (Debian's python3-websocket, websocket-client).

Reads a JSON plan on stdin: {"url", "protocols", "timeout", "steps": [...]}, runs it, prints one JSON
result: {"status", "protocol", "messages": [[channel, base64 data], ...], "closed_by_server", "error"}.
Written against the Kubernetes channel protocol description, not against the server's code.

Steps:
  ["send", channel, text]            one message on channel (binary, or text for base64 protocols)
  ["close", channel]                 v5 stream close: channel 255 with the channel number
  ["resize", width, height]          {"Width":..,"Height":..} on channel 4
  ["wait_for", channel, text]        read messages until channel's data contains text
  ["poke_until", channel, text, send_channel, send_text]
                                     send send_text every 0.3 s until channel's data contains text
  ["read_until_close"]               read until the server closes the connection
  ["count_until_close"]              the same, keeping only byte counts per channel ("counts")
  ["raw", hex]                       write raw bytes to the TCP socket (malformed frames)
  ["drop"]                           close the TCP connection without a close frame, stop
  ["close_ws"]                       normal close handshake (detach), stop
  ["wait_file", path]                wait until path exists (the test says when to go on)
  ["sleep", seconds]
"""
import base64
import json
import socket
import sys
import time

import websocket

plan = json.load(sys.stdin)
result = {"status": None, "protocol": None, "messages": [], "closed_by_server": False, "error": None, "counts": {}}
counting = False
b64proto = False
data = {}


def record(ch, payload):
    if counting:
        result["counts"][str(ch)] = result["counts"].get(str(ch), 0) + len(payload)
        return
    result["messages"].append([ch, base64.b64encode(payload).decode()])
    data[ch] = data.get(ch, b"") + payload


def recv_one(ws):
    """One message; returns False once the server closed."""
    try:
        opcode, payload = ws.recv_data()
    except websocket.WebSocketTimeoutException:
        raise
    except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
        result["closed_by_server"] = True
        return False
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        result["closed_by_server"] = True
        return False
    if not payload:
        return True
    if b64proto:
        text = payload.decode() if isinstance(payload, bytes) else payload
        record(int(text[0]), base64.b64decode(text[1:]))
    else:
        record(payload[0], bytes(payload[1:]))
    return True


def send(ws, ch, payload):
    if b64proto:
        ws.send(str(ch) + base64.b64encode(payload).decode())
    else:
        ws.send_binary(bytes([ch]) + payload)


try:
    try:
        ws = websocket.create_connection(plan["url"], subprotocols=plan.get("protocols") or None,
                                         timeout=plan.get("timeout", 30))
    except websocket.WebSocketBadStatusException as e:
        result["status"] = e.status_code
        print(json.dumps(result))
        sys.exit(0)
    result["status"] = ws.getstatus()
    result["protocol"] = ws.getsubprotocol()
    b64proto = bool(result["protocol"]) and "base64." in result["protocol"]
    for step in plan.get("steps", []):
        kind = step[0]
        if kind == "send":
            send(ws, step[1], step[2].encode())
        elif kind == "close":
            ws.send_binary(bytes([255, step[1]]))
        elif kind == "resize":
            send(ws, 4, json.dumps({"Width": step[1], "Height": step[2]}).encode())
        elif kind == "wait_for":
            while step[2].encode() not in data.get(step[1], b""):
                if not recv_one(ws):
                    raise RuntimeError("server closed before %r appeared on channel %d" % (step[2], step[1]))
        elif kind == "poke_until":
            ws.settimeout(0.3)
            while step[2].encode() not in data.get(step[1], b""):
                send(ws, step[3], step[4].encode())
                try:
                    while recv_one(ws):
                        pass
                    raise RuntimeError("server closed before %r appeared" % step[2])
                except websocket.WebSocketTimeoutException:
                    pass
            ws.settimeout(plan.get("timeout", 30))
        elif kind == "read_until_close":
            while recv_one(ws):
                pass
        elif kind == "count_until_close":
            counting = True
            while recv_one(ws):
                pass
        elif kind == "raw":
            ws.sock.sendall(bytes.fromhex(step[1]))
        elif kind == "drop":
            ws.sock.shutdown(socket.SHUT_RDWR)
            ws.sock.close()
            break
        elif kind == "close_ws":
            ws.close()
            break
        elif kind == "wait_file":
            import os
            deadline = time.time() + 60
            while not os.path.exists(step[1]):
                if time.time() > deadline:
                    raise RuntimeError("%s did not appear" % step[1])
                time.sleep(0.05)
        elif kind == "sleep":
            time.sleep(step[1])
        else:
            raise RuntimeError("unknown step %r" % (kind,))
except Exception as e:  # reported to the test, which decides
    result["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(result))
