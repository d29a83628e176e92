"""Every SMTP reply the gateway sends, in one catalogue.

Each reply carries its enhanced status code (RFC 3463). Texts may hold
``{name}`` fields filled by :meth:`Reply.format`. Tests import this module
to compare replies, so a text changes in one place only.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reply:
    code: int
    status: str  # enhanced status code, e.g. "5.7.1"
    text: str

    def format(self, **fields: object) -> str:
        """The reply line without CRLF, as aiosmtpd's push() takes it."""
        text = self.text.format(**fields) if fields else self.text
        # RFC 2034 s3: the greeting and HELO/EHLO answers carry no status code.
        if not self.status:
            return f"{self.code} {text}"
        return f"{self.code} {self.status} {text}"

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


# region transaction
QUEUED = Reply(250, "2.0.0", "Ok: queued as {qid}")
# endregion

# region SMTP session (core/smtp)
GREETING = Reply(220, "", "{host} ESMTP Portcullis")
XCLIENT_GREETING = Reply(220, "", "{host} ESMTP Portcullis")
HELO_OK = Reply(250, "", "{host}")
PREGREET = Reply(554, "5.5.1", "Protocol error: talked before the greeting")
SHUTTING_DOWN = Reply(421, "4.3.2", "{host} Service shutting down, try again later")
TIMEOUT = Reply(421, "4.4.2", "{host} Timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "{host} Too many errors, closing connection")
BYE = Reply(221, "2.0.0", "Bye")
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
START_TLS = Reply(220, "2.0.0", "Ready to start TLS")
VRFY_CANNOT = Reply(252, "2.0.0", "Cannot VRFY user, but will accept message")
HELP = Reply(214, "2.0.0", "Commands: {commands}")
# Syntax and sequence (RFC 5321 s4.2.2, RFC 3463 X.5.x).
BAD_SYNTAX = Reply(500, "5.5.2", "Syntax error, command unrecognized")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized: {command}")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented: {command}")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6: 1000 octets)")
BAD_UTF8 = Reply(501, "5.5.2", "Invalid UTF-8 in command")
EIGHT_BIT_NO_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address without SMTPUTF8")
ARGS_NOT_ALLOWED = Reply(501, "5.5.4", "Syntax: {command} takes no argument")
HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: {command} hostname")
NEED_HELO = Reply(503, "5.5.1", "Send HELO or EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax: {reason}")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax: {reason}")
NULL_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address: <> is only a sender")
BAD_PARAM = Reply(501, "5.5.4", "Bad {command} parameter: {param}")
UNKNOWN_PARAM = Reply(555, "5.5.4", "{command} parameter not supported: {param}")
SIZE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit of {limit} octets")
DATA_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit of {limit} octets")
DATA_LINE_TOO_LONG = Reply(500, "5.5.2",
                           "Line too long in message (RFC 5321 4.5.3.1.6)")
BARE_LF = Reply(550, "5.5.2", "Bare <LF> or <CR> received; end lines with <CR><LF>")
NOT_SMTPUTF8 = Reply(501, "5.5.4", "SMTPUTF8 takes no value")
# Relay control and limits.
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied for {rcpt}")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
STORE_FAILED = Reply(451, "4.3.0", "Temporary failure storing the message, try later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")
POLICY_FAILED = Reply(451, "4.3.0", "Temporary failure checking the message, try later")
# STARTTLS (RFC 3207) and XCLIENT (Postfix XCLIENT_README).
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
TLS_ALREADY = Reply(503, "5.5.1", "TLS already active")
TLS_IN_TRANSACTION = Reply(503, "5.5.1", "STARTTLS not allowed in a mail transaction")
XCLIENT_DENIED = Reply(550, "5.7.0", "XCLIENT not authorized")
XCLIENT_SYNTAX = Reply(501, "5.5.4", "Bad XCLIENT attribute: {attr}")
XCLIENT_IN_TRANSACTION = Reply(503, "5.5.1", "XCLIENT not allowed in a transaction")
# endregion

# region SMTP-time policy (core/policy)
# RFC 7372 s3.2: 5.7.23 is "SPF validation failed"; RFC 7208 s8.6-8.7.
SPF_FAIL = Reply(550, "5.7.23", "SPF check failed for {domain}: {explanation}")
SPF_PERMERROR = Reply(550, "5.5.2", "SPF record of {domain} is invalid: {problem}")
SPF_TEMPERROR = Reply(451, "4.4.3", "SPF check of {domain} failed temporarily, "
                      "try again later")
DNSBL_LISTED = Reply(554, "5.7.1", "Service unavailable; client [{ip}] blocked "
                     "using {zones}")
GREYLISTED = Reply(450, "4.7.1", "Greylisted, please try again in {delay} seconds")
SENDER_BLOCKED = Reply(550, "5.7.1", "Sender address <{address}> blocked by "
                       "local policy")
RECIPIENT_BLOCKED = Reply(550, "5.7.1", "Recipient address <{address}> blocked "
                          "by local policy")
UNKNOWN_USER = Reply(550, "5.1.1", "Recipient address rejected: <{address}> "
                     "unknown user")
UNKNOWN_USER_TEMP = Reply(450, "4.1.1", "Recipient address rejected: <{address}> "
                          "unknown user")
VERIFY_UNAVAILABLE = Reply(450, "4.4.3", "Recipient address not verified now, "
                           "try again later")
HELO_NOT_FQDN = Reply(504, "5.5.2", "Helo command rejected: need fully-qualified "
                      "hostname")
HELO_NOT_FQDN_TEMP = Reply(450, "4.7.1", "Helo command rejected: need "
                           "fully-qualified hostname")
HELO_OWN_NAME = Reply(550, "5.7.1", "Helo command rejected: that is my name")
HELO_OWN_NAME_TEMP = Reply(450, "4.7.1", "Helo command rejected: that is my name")
CLIENT_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your "
                           "address, try again later")
CLIENT_CONNECTION_RATE = Reply(421, "4.7.0", "Connection rate limit exceeded, "
                               "try again later")
CLIENT_MESSAGE_RATE = Reply(450, "4.7.1", "Message rate limit exceeded, "
                            "try again later")
CLIENT_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients for one message")
# endregion
