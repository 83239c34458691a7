"""Fake SMS providers: real aiohttp apps that check requests the way each provider documents them (method,
path, content type, field names, authentication) and answer with that provider's success and error shapes.

Every fake follows the same two rules so that tests can predict its answers:
- a recipient whose number ends in `99` is refused on its own (inside an accepted batch answer where the
  provider reports per-number results, or as the answer itself for one-message providers);
- a request whose sender (or template) is `BLOCKED` is refused as a whole, the way the provider refuses a
  request (an HTTP error, or an error inside a 200 answer).

A request that breaks the provider's documented contract is answered with the provider's error and noted
in `problems`, which a test asserts empty. `issued` maps each accepted recipient (E.164) to the id the
provider gave it; `refused` holds the recipients it refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode

import orjson
from aiohttp import web

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
DIGITS = re.compile(r"^[1-9][0-9]{6,14}$")
BLOCKED = "BLOCKED"


class Refusal(Exception):
    """The request breaks the provider's contract: answer `response`, note `problem`."""

    def __init__(self, problem: str, response: web.Response) -> None:
        super().__init__(problem)
        self.problem = problem
        self.response = response


def json_response(doc: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type=content_type)


def invalid(number: str) -> bool:
    return number.endswith("99")


def e164(number: str) -> str:
    return number if number.startswith("+") else "+" + number


class FakeProvider:
    """What every fake shares: routing, bookkeeping and small checks."""

    name: ClassVar[str]
    method: ClassVar[str] = "POST"

    def __init__(self, path: str, **credentials: str) -> None:
        self.path = path
        self.credentials = credentials
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.issued: dict[str, str] = {}
        self.refused: set[str] = set()
        self.references: dict[str, str] = {}
        """Recipient (E.164) -> the client reference the request carried for it (our message id)."""
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            self.expect(request.method == self.method, f"method {request.method}", self.error(405, "method"))
            self.expect(request.path == self.path, f"path {request.path}", self.error(404, "not found"))
            return await self.answer(request, body)
        except Refusal as refusal:
            self.problems.append(refusal.problem)
            return refusal.response

    def expect(self, condition: bool, problem: str, response: web.Response | None = None) -> None:
        if not condition:
            raise Refusal(problem, response or self.error(400, problem))

    def content_type(self, request: web.Request, expected: str) -> None:
        actual = request.headers.get("Content-Type", "").split(";")[0].strip()
        self.expect(actual == expected, f"content type {actual!r}, expected {expected}", self.error(415, "type"))

    def basic(self, request: web.Request, username: str, password: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.expect(
            request.headers.get("Authorization") == f"Basic {token}", "basic credentials", self.error(401, "auth")
        )

    def fields(self, body: bytes, request: web.Request, required: set[str], allowed: set[str]) -> dict[str, str]:
        """Form fields (or the query of a GET), each once, all known, the required ones present."""
        raw = request.query_string if request.method == "GET" else body.decode()
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
        names = [k for k, _ in pairs]
        self.expect(len(names) == len(set(names)), f"repeated fields {names}")
        self.expect(required <= set(names), f"missing fields {sorted(required - set(names))}")
        self.expect(set(names) <= required | allowed, f"unknown fields {sorted(set(names) - required - allowed)}")
        return dict(pairs)

    def json(self, body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Refusal("body is not JSON", self.error(400, "json")) from None

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):04d}"

    def accept(self, recipient: str, provider_id: str) -> None:
        self.issued[e164(recipient)] = provider_id

    def refuse(self, recipient: str) -> None:
        self.refused.add(e164(recipient))

    def error(self, status: int, message: str) -> web.Response:
        return json_response({"error": message}, status)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        raise NotImplementedError

    def callback(self, to: str, delivered: bool = True, provider_id: str | None = None) -> tuple[str, bytes]:
        """The delivery report this provider sends for the message it accepted for `to`: (content type, body).
        `provider_id` overrides the id it issued (a report for a message this service never sent)."""
        raise NotImplementedError(f"{self.name} documents no delivery reports")

    def _id_of(self, to: str, provider_id: str | None) -> str:
        return provider_id if provider_id is not None else self.issued[e164(to)]


class BulkSMS(FakeProvider):
    """JSON REST API v1: an array of message objects; 201 with one message object per input, in order."""

    name = "bulksms"

    def error(self, status: int, message: str) -> web.Response:
        problem = {"type": "about:blank", "title": message, "status": status, "detail": message}
        return json_response(problem, status, content_type="application/problem+json")

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.basic(request, self.credentials["username"], self.credentials["password"])
        self.content_type(request, "application/json")
        self.expect(request.query.get("auto-unicode") == "true", "auto-unicode query parameter")
        messages = self.json(body)
        self.expect(isinstance(messages, list) and len(messages) >= 1, "an array of messages")
        for m in messages:
            self.expect(
                isinstance(m, dict) and set(m) <= {"to", "body", "from", "encoding", "userSuppliedId"}, "fields"
            )
            self.expect(bool(E164.match(m.get("to", ""))), f"to {m.get('to')!r}")
            self.expect(isinstance(m.get("body"), str), "body")
        self.requests.append({"messages": messages})
        if any(m.get("from") == BLOCKED for m in messages):
            for m in messages:
                self.refuse(m["to"])
            return self.error(400, "The sender is not allowed")
        out = []
        for m in messages:
            mid = self.new_id("bs")
            if invalid(m["to"]):
                self.refuse(m["to"])
                status = {"id": "FAILED.UNROUTABLE", "type": "FAILED", "subtype": "UNROUTABLE"}
            else:
                self.accept(m["to"], mid)
                if m.get("userSuppliedId"):
                    self.references[m["to"]] = m["userSuppliedId"]
                status = {"id": "ACCEPTED.null", "type": "ACCEPTED", "subtype": None}
            out.append(
                {
                    "id": mid,
                    "type": "SENT",
                    "to": m["to"],
                    "body": m["body"],
                    "status": status,
                    "userSuppliedId": m.get("userSuppliedId"),
                    "numberOfParts": 1,
                }
            )
        return json_response(out, 201)


class Exotel(FakeProvider):
    """SMS API `send.json`: form fields, `To` comma-separated; `{"SMSMessage": ...}` per number (an array for
    several), numbers given back in national form with a trunk 0."""

    name = "exotel"

    def error(self, status: int, message: str) -> web.Response:
        return json_response({"RestException": {"Status": status, "Message": message}}, status)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.basic(request, self.credentials["username"], self.credentials["password"])
        self.content_type(request, "application/x-www-form-urlencoded")
        allowed = {
            "EncodingType",
            "DltEntityId",
            "DltTemplateId",
            "SmsType",
            "CustomField",
            "StatusCallback",
            "Priority",
            "ShortenUrl",
        }
        fields = self.fields(body, request, {"From", "To", "Body"}, allowed)
        numbers = fields["To"].split(",")
        self.expect(all(E164.match(n) for n in numbers), f"To {fields['To']!r}")
        self.requests.append(fields)
        if fields["From"] == BLOCKED:
            for n in numbers:
                self.refuse(n)
            return self.error(400, "Invalid From")
        out = []
        for n in numbers:
            sid = self.new_id("ex")
            national = "0" + n[3:] if n.startswith("+91") else n
            failed = invalid(n)
            if failed:
                self.refuse(n)
            else:
                self.accept(n, sid)
            out.append(
                {
                    "SMSMessage": {
                        "Sid": sid,
                        "AccountSid": "acme",
                        "From": fields["From"],
                        "To": national,
                        "Body": fields["Body"],
                        "Status": "failed" if failed else "queued",
                        "DetailedStatus": "FAILED_INVALID_NUMBER" if failed else "PENDING_TO_OPERATOR",
                    }
                }
            )
        return json_response(out if len(out) > 1 else out[0])


class MSG91(FakeProvider):
    """Flow API v5: `authkey` header, JSON with `template_id` and `recipients`; one request id per request."""

    name = "msg91"

    def error(self, status: int, message: str) -> web.Response:
        return json_response({"type": "error", "message": message}, status)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.expect(request.headers.get("authkey") == self.credentials["authkey"], "authkey", self.error(401, "auth"))
        self.content_type(request, "application/json")
        doc = self.json(body)
        self.expect(isinstance(doc, dict) and {"template_id", "recipients"} <= set(doc), "template_id, recipients")
        self.expect(set(doc) <= {"template_id", "short_url", "recipients", "sender", "flow_id"}, f"keys {set(doc)}")
        recipients = doc["recipients"]
        self.expect(isinstance(recipients, list) and len(recipients) >= 1, "recipients array")
        self.expect(all(DIGITS.match(str(r.get("mobiles", ""))) for r in recipients), "mobiles without +")
        self.requests.append(doc)
        numbers = [r["mobiles"] for r in recipients]
        if doc["template_id"] == BLOCKED:
            for n in numbers:
                self.refuse(n)
            # An error inside a 200 answer.
            return json_response({"type": "error", "message": "Template ID is not approved"})
        request_id = self.new_id("msg91req")
        for n in numbers:
            self.accept(n, request_id)
        return json_response({"type": "success", "message": request_id})


class Nimbus(FakeProvider):
    """GET with every value in the query; JSON answer with `Status` and `Response`."""

    name = "nimbus"
    method = "GET"

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        fields = self.fields(
            body, request, {"UserID", "Password", "SenderID", "Phno", "Msg", "EntityID"}, {"TemplateID"}
        )
        self.expect(
            fields["UserID"] == self.credentials["user"] and fields["Password"] == self.credentials["password"],
            "credentials",
            json_response({"Status": "ERROR", "Response": {"Message": "Invalid login"}}),
        )
        self.expect(bool(DIGITS.match(fields["Phno"])), f"Phno {fields['Phno']!r}")
        self.requests.append(fields)
        number = fields["Phno"]
        if fields["SenderID"] == BLOCKED or invalid(number):
            self.refuse(number)
            reason = "Invalid Sender ID" if fields["SenderID"] == BLOCKED else "Invalid Mobile Number"
            return json_response({"Status": "ERROR", "Response": {"Message": reason}})
        mid = self.new_id("nb")
        self.accept(number, mid)
        return json_response({"Status": "OK", "Response": {"Message": "Message Submitted", "MessageId": mid}})


class Plivo(FakeProvider):
    """Message API: JSON, `dst` joined with `<`; 202 with `message_uuid` (valid numbers, in order) and
    `invalid_number`; 400 `{"api_id", "error"}` for a request it cannot take."""

    name = "plivo"

    def error(self, status: int, message: str) -> web.Response:
        return json_response({"api_id": "api-err", "error": message}, status)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.basic(request, self.credentials["auth_id"], self.credentials["auth_token"])
        self.content_type(request, "application/json")
        doc = self.json(body)
        self.expect(isinstance(doc, dict) and {"src", "dst", "text"} <= set(doc), "src, dst, text")
        self.expect(set(doc) <= {"src", "dst", "text", "type", "url", "method", "log"}, f"keys {set(doc)}")
        numbers = doc["dst"].split("<")
        self.expect(len(numbers) <= 1000 and len(set(numbers)) == len(numbers), "up to 1000 unique numbers")
        self.expect(all(E164.match(n) for n in numbers), f"dst {doc['dst']!r}")
        self.requests.append(doc)
        if doc["src"] == BLOCKED:
            for n in numbers:
                self.refuse(n)
            return self.error(400, "src parameter is not a valid sender")
        uuids, bad = [], []
        for n in numbers:
            if invalid(n):
                self.refuse(n)
                bad.append(n[1:])  # given back as digits
            else:
                uuids.append(self.new_id("plivo"))
                self.accept(n, uuids[-1])
        answer: dict[str, Any] = {"api_id": "api-1", "message": "message(s) queued", "message_uuid": uuids}
        if bad:
            answer["invalid_number"] = bad
        return json_response(answer, 202)


class SMSIndiaHub(FakeProvider):
    """pushsms.aspx: GET, `msisdn` comma-separated digits; `ErrorCode` "000" or an error, `MessageData` per
    accepted number (an invalid number is left out)."""

    name = "smsindiahub"
    method = "GET"

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        fields = self.fields(
            body, request, {"user", "password", "msisdn", "sid", "msg", "fl"}, {"gwid", "DLTTemplateId", "APIKey"}
        )
        if fields["user"] != self.credentials["user"] or fields["password"] != self.credentials["password"]:
            raise Refusal(
                "credentials", json_response({"ErrorCode": "001", "ErrorMessage": "Login details cannot be blank"})
            )
        numbers = fields["msisdn"].split(",")
        self.expect(all(DIGITS.match(n) for n in numbers), f"msisdn {fields['msisdn']!r}")
        self.expect(fields["fl"] in {"0", "1"}, "fl")
        self.requests.append(fields)
        if fields["sid"] == BLOCKED:
            for n in numbers:
                self.refuse(n)
            return json_response(
                {"ErrorCode": "013", "ErrorMessage": "Invalid Sender Id", "JobId": None, "MessageData": None}
            )
        data = []
        for n in numbers:
            if invalid(n):
                self.refuse(n)
                continue
            mid = self.new_id("sih")
            self.accept(n, mid)
            data.append({"Number": n, "MessageId": mid})
        return json_response({"ErrorCode": "000", "ErrorMessage": "Done", "JobId": "job-1", "MessageData": data})


class TextLocal(FakeProvider):
    """send API: form with `apikey`, `numbers` comma-separated digits; `status` success with `messages`
    (recipients as numbers; an invalid one left out) or failure with `errors`."""

    name = "textlocal"

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.content_type(request, "application/x-www-form-urlencoded")
        fields = self.fields(
            body,
            request,
            {"apikey", "numbers", "message"},
            {"sender", "receipt_url", "custom", "test", "schedule_time"},
        )
        if fields["apikey"] != self.credentials["apikey"]:
            raise Refusal(
                "apikey",
                json_response({"errors": [{"code": 3, "message": "Invalid login details"}], "status": "failure"}),
            )
        numbers = fields["numbers"].split(",")
        self.expect(all(DIGITS.match(n) for n in numbers), f"numbers {fields['numbers']!r}")
        self.requests.append(fields)
        if fields.get("sender") == BLOCKED:
            for n in numbers:
                self.refuse(n)
            return json_response({"errors": [{"code": 43, "message": "Invalid sender name"}], "status": "failure"})
        messages = []
        for n in numbers:
            if invalid(n):
                self.refuse(n)
                continue
            mid = self.new_id("tl")
            self.accept(n, mid)
            messages.append({"id": mid, "recipient": int(n)})
        return json_response(
            {
                "balance": 1000,
                "batch_id": 123456789,
                "cost": len(messages),
                "num_messages": len(messages),
                "message": {"num_parts": 1, "sender": fields.get("sender"), "content": fields["message"]},
                "receipt_url": "",
                "custom": "",
                "messages": messages,
                "status": "success",
            }
        )


class Pinpoint(FakeProvider):
    """SendMessages: SigV4 (`mobiletargeting`) checked to the signature; `Addresses` keyed by number; the
    answer's `Result` has a result per address, failures included."""

    name = "pinpoint"

    def error(self, status: int, message: str) -> web.Response:
        return json_response({"Message": message, "RequestID": "req-err"}, status)

    def _verify_sigv4(self, request: web.Request, body: bytes) -> None:
        auth = request.headers.get("Authorization", "")
        match = re.fullmatch(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
            r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            auth,
        )
        self.expect(match is not None, f"SigV4 Authorization header shape: {auth[:40]!r}", self.error(403, "sig"))
        assert match is not None
        key_id, date, region, service, signed, signature = match.groups()
        creds = self.credentials
        self.expect(key_id == creds["access_key_id"] and region == creds["region"], "credential scope")
        self.expect(service == "mobiletargeting", f"service {service}")
        amz_date = request.headers.get("X-Amz-Date", "")
        self.expect(amz_date.startswith(date), "X-Amz-Date")
        names = signed.split(";")
        self.expect("host" in names and "x-amz-date" in names, "signed headers")
        canonical_headers = "".join(f"{n}:{' '.join(request.headers.get(n, '').split())}\n" for n in names)
        query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(request.query.items()))
        canonical = "\n".join(
            [
                request.method,
                quote(request.path, safe="/-_.~"),
                query,
                canonical_headers,
                signed,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + creds["secret_access_key"]).encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        self.expect(hmac.compare_digest(expected, signature), "SigV4 signature", self.error(403, "signature"))

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self._verify_sigv4(request, body)
        self.content_type(request, "application/json")
        doc = self.json(body)
        self.expect(isinstance(doc, dict) and set(doc) == {"Addresses", "MessageConfiguration"}, "top-level keys")
        addresses = doc["Addresses"]
        self.expect(isinstance(addresses, dict) and all(E164.match(a) for a in addresses), "Addresses")
        self.expect(all(v == {"ChannelType": "SMS"} for v in addresses.values()), "ChannelType SMS")
        sms = doc["MessageConfiguration"].get("SMSMessage", {})
        self.expect(
            isinstance(sms.get("Body"), str) and sms.get("MessageType") in {"TRANSACTIONAL", "PROMOTIONAL"},
            "SMSMessage Body and MessageType",
        )
        self.requests.append(doc)
        if sms.get("OriginationNumber") == BLOCKED:
            for a in addresses:
                self.refuse(a)
            return self.error(400, "Origination number is not valid")
        result = {}
        for a in addresses:
            if invalid(a):
                self.refuse(a)
                result[a] = {
                    "DeliveryStatus": "PERMANENT_FAILURE",
                    "StatusCode": 400,
                    "StatusMessage": "Invalid phone number",
                }
            else:
                mid = self.new_id("pp")
                self.accept(a, mid)
                result[a] = {
                    "DeliveryStatus": "SUCCESSFUL",
                    "StatusCode": 200,
                    "StatusMessage": f"MessageId: {mid}",
                    "MessageId": mid,
                }
        return json_response({"MessageResponse": {"ApplicationId": "app-123", "RequestId": "r-1", "Result": result}})


class Mitto(FakeProvider):
    """SMS API: `X-Mitto-API-Key`, JSON `from`, `to` (digits), `text`, `type`; `responseCode` 0 when sent."""

    name = "mitto"

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.expect(
            request.headers.get("X-Mitto-API-Key") == self.credentials["api_key"],
            "X-Mitto-API-Key",
            json_response({"responseCode": 1, "responseText": "Unauthorized"}, 401),
        )
        self.content_type(request, "application/json")
        doc = self.json(body)
        self.expect(isinstance(doc, dict) and {"from", "to", "text"} <= set(doc), "from, to, text")
        self.expect(set(doc) <= {"from", "to", "text", "type", "reference", "test", "pid", "flash"}, f"keys {set(doc)}")
        self.expect(doc.get("type") in {None, "GSM", "Unicode", "Binary", "Auto"}, "type")
        self.requests.append(doc)
        number = str(doc["to"])
        if not DIGITS.match(number) or invalid(number):
            self.refuse(number)
            return json_response({"responseCode": 8, "responseText": "Invalid receiver"})
        if doc["from"] == BLOCKED:
            self.refuse(number)
            return json_response({"responseCode": 6, "responseText": "Invalid sender"})
        mid = self.new_id("mitto")
        self.accept(number, mid)
        return json_response(
            {
                "id": mid,
                "timestamp": "2026-01-01T00:00:00Z",
                "responseCode": 0,
                "textLength": len(doc["text"]),
                "responseText": "SMS sent",
                "test": False,
            }
        )


class Twilio(FakeProvider):
    """Messages API: HTTP Basic (account sid, token), form `To`, `From`, `Body`; 201 with `sid`, 400 with
    `code` and `message`."""

    name = "twilio"

    def error(self, status: int, message: str, code: int = 20001) -> web.Response:
        return json_response(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status,
        )

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.basic(request, self.credentials["sid"], self.credentials["token"])
        self.content_type(request, "application/x-www-form-urlencoded")
        fields = self.fields(body, request, {"To", "Body"}, {"From", "MessagingServiceSid", "StatusCallback"})
        self.expect(("From" in fields) != ("MessagingServiceSid" in fields), "From or MessagingServiceSid")
        self.expect(bool(E164.match(fields["To"])), f"To {fields['To']!r}")
        self.requests.append(fields)
        if invalid(fields["To"]):
            self.refuse(fields["To"])
            return self.error(400, f"The 'To' number {fields['To']} is not a valid phone number.", 21211)
        if fields.get("From") == BLOCKED:
            self.refuse(fields["To"])
            return self.error(400, "The 'From' number is not a valid phone number or short code.", 21212)
        sid = "SM" + self.new_id("tw").replace("-", "")
        self.accept(fields["To"], sid)
        return json_response(
            {
                "sid": sid,
                "status": "queued",
                "to": fields["To"],
                "from": fields.get("From"),
                "body": fields["Body"],
                "num_segments": "1",
                "error_code": None,
            },
            201,
        )


class Sinch(FakeProvider):
    """xms batches: `Authorization: Bearer`, JSON `from`, `to` (1..1000 E.164), `body`; 201 with the batch
    `id`; 400 `{"code", "text"}`."""

    name = "sinch"

    def error(self, status: int, message: str) -> web.Response:
        return json_response({"code": "syntax_invalid_parameter_format", "text": message}, status)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.expect(
            request.headers.get("Authorization") == f"Bearer {self.credentials['token']}",
            "bearer token",
            json_response({"code": "unauthorized", "text": "Unauthorized"}, 401),
        )
        self.content_type(request, "application/json")
        doc = self.json(body)
        self.expect(isinstance(doc, dict) and {"to", "body"} <= set(doc), "to, body")
        allowed = {"from", "to", "body", "type", "delivery_report", "callback_url", "client_reference"}
        self.expect(set(doc) <= allowed, f"keys {set(doc)}")
        to = doc["to"]
        self.expect(isinstance(to, list) and 1 <= len(to) <= 1000 and all(E164.match(n) for n in to), "to array")
        self.requests.append(doc)
        if doc.get("from") == BLOCKED or any(invalid(n) for n in to):
            for n in to:
                self.refuse(n)
            return self.error(400, "Invalid 'from' or 'to' parameter")
        batch_id = self.new_id("01SINCH")
        for n in to:
            self.accept(n, batch_id)
        return json_response(
            {
                "id": batch_id,
                "to": to,
                "from": doc.get("from"),
                "canceled": False,
                "body": doc["body"],
                "type": "mt_text",
                "delivery_report": "none",
            },
            201,
        )


FORM = "application/x-www-form-urlencoded"


def _form(fields: dict[str, str]) -> tuple[str, bytes]:
    return FORM, urlencode(fields).encode()


def _bulksms_callback(self: FakeProvider, to: str, delivered: bool = True, provider_id: str | None = None):
    status = {"id": "DELIVERED.null", "type": "DELIVERED", "subtype": None}
    if not delivered:
        status = {"id": "FAILED.ABSENT", "type": "FAILED", "subtype": "ABSENT_SUBSCRIBER"}
    report = {
        "id": self._id_of(to, provider_id),
        "type": "SENT",
        "to": to,
        "status": status,
        "userSuppliedId": self.references.get(to),
        "numberOfParts": 1,
    }
    return "application/json", orjson.dumps([report])


def _exotel_callback(self: FakeProvider, to: str, delivered: bool = True, provider_id: str | None = None):
    national = "0" + to[3:] if to.startswith("+91") else to
    return _form(
        {
            "SmsSid": self._id_of(to, provider_id),
            "To": national,
            "Status": "sent" if delivered else "failed",
            "DetailedStatus": "DELIVERED_TO_HANDSET" if delivered else "FAILED_ABSENT_SUBSCRIBER",
            "DetailedStatusCode": "20005" if delivered else "30007",
            "DateSent": "2026-01-01 10:00:00",
        }
    )


def _msg91_callback(self: FakeProvider, to: str, delivered: bool = True, provider_id: str | None = None):
    report = {
        "requestId": self._id_of(to, provider_id),
        "number": to.lstrip("+"),
        "status": "1" if delivered else "2",
        "desc": "DELIVERED" if delivered else "FAILED",
        "failedReason": "" if delivered else "Absent subscriber",
        "date": "2026-01-01 10:00:00",
    }
    return _form({"data": orjson.dumps([report]).decode()})


def _plivo_callback(self: FakeProvider, to: str, delivered: bool = True, provider_id: str | None = None):
    return _form(
        {
            "MessageUUID": self._id_of(to, provider_id),
            "To": to.lstrip("+"),
            "From": "ACME",
            "Status": "delivered" if delivered else "undelivered",
            "ErrorCode": "000" if delivered else "200",
            "TotalRate": "0.0035",
            "Units": "1",
        }
    )


def _textlocal_callback(self: FakeProvider, to: str, delivered: bool = True, provider_id: str | None = None):
    return _form(
        {
            "number": to.lstrip("+"),
            "status": "D" if delivered else "U",
            "customID": provider_id or self.references.get(to, ""),
            "datetime": "2026-01-01 10:00:00",
        }
    )


def _twilio_callback(self: FakeProvider, to: str, delivered: bool = True, provider_id: str | None = None):
    fields = {
        "MessageSid": self._id_of(to, provider_id),
        "SmsSid": self._id_of(to, provider_id),
        "AccountSid": self.credentials.get("sid", "AC"),
        "To": to,
        "From": "ACME",
        "MessageStatus": "delivered" if delivered else "undelivered",
        "SmsStatus": "delivered" if delivered else "undelivered",
        "ApiVersion": "2010-04-01",
    }
    if not delivered:
        fields["ErrorCode"] = "30003"
    return _form(fields)


def _sinch_callback(self: FakeProvider, to: str, delivered: bool = True, provider_id: str | None = None):
    report = {
        "type": "recipient_delivery_report_sms",
        "batch_id": self._id_of(to, provider_id),
        "recipient": to.lstrip("+"),
        "code": 0 if delivered else 401,
        "status": "Delivered" if delivered else "Failed",
        "at": "2026-01-01T10:00:00.000Z",
    }
    return "application/json", orjson.dumps(report)


for _cls, _builder in (
    (BulkSMS, _bulksms_callback),
    (Exotel, _exotel_callback),
    (MSG91, _msg91_callback),
    (Plivo, _plivo_callback),
    (TextLocal, _textlocal_callback),
    (Twilio, _twilio_callback),
    (Sinch, _sinch_callback),
):
    _cls.callback = _builder  # type: ignore[method-assign,assignment]

FAKES: dict[str, type[FakeProvider]] = {
    cls.name: cls
    for cls in (BulkSMS, Exotel, MSG91, Nimbus, Plivo, SMSIndiaHub, TextLocal, Pinpoint, Mitto, Twilio, Sinch)
}
