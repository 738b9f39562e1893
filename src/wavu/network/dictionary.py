"""The RADIUS attributes Wavu itself sends and reads (with pyrad): authentication and accounting in
tests and benchmarks, CoA and Disconnect-Requests to routers.

Numbers from RFC 2865, 2866, 2869, 3162, 3576/5176 and MikroTik's vendor dictionary (vendor 14988).
FreeRADIUS uses its own, complete dictionaries; this one only has to agree with them on these.
"""

from __future__ import annotations

import io
from functools import cache

RADIUS_DICTIONARY = """\
ATTRIBUTE	User-Name			1	string
ATTRIBUTE	User-Password			2	string	encrypt=1
ATTRIBUTE	CHAP-Password			3	octets
ATTRIBUTE	NAS-IP-Address			4	ipaddr
ATTRIBUTE	NAS-Port			5	integer
ATTRIBUTE	Service-Type			6	integer
ATTRIBUTE	Framed-Protocol			7	integer
ATTRIBUTE	Framed-IP-Address		8	ipaddr
ATTRIBUTE	Framed-IP-Netmask		9	ipaddr
ATTRIBUTE	Reply-Message			18	string
ATTRIBUTE	State				24	octets
ATTRIBUTE	Class				25	octets
ATTRIBUTE	Vendor-Specific			26	octets
ATTRIBUTE	Session-Timeout			27	integer
ATTRIBUTE	Idle-Timeout			28	integer
ATTRIBUTE	Called-Station-Id		30	string
ATTRIBUTE	Calling-Station-Id		31	string
ATTRIBUTE	NAS-Identifier			32	string
ATTRIBUTE	Acct-Status-Type		40	integer
ATTRIBUTE	Acct-Delay-Time			41	integer
ATTRIBUTE	Acct-Input-Octets		42	integer
ATTRIBUTE	Acct-Output-Octets		43	integer
ATTRIBUTE	Acct-Session-Id			44	string
ATTRIBUTE	Acct-Authentic			45	integer
ATTRIBUTE	Acct-Session-Time		46	integer
ATTRIBUTE	Acct-Input-Packets		47	integer
ATTRIBUTE	Acct-Output-Packets		48	integer
ATTRIBUTE	Acct-Terminate-Cause		49	integer
ATTRIBUTE	Acct-Input-Gigawords		52	integer
ATTRIBUTE	Acct-Output-Gigawords		53	integer
ATTRIBUTE	Event-Timestamp			55	date
ATTRIBUTE	CHAP-Challenge			60	octets
ATTRIBUTE	NAS-Port-Type			61	integer
ATTRIBUTE	Connect-Info			77	string
ATTRIBUTE	Message-Authenticator		80	octets
ATTRIBUTE	Acct-Interim-Interval		85	integer
ATTRIBUTE	NAS-Port-Id			87	string
ATTRIBUTE	Framed-Pool			88	string
ATTRIBUTE	Error-Cause			101	integer

VALUE	Acct-Status-Type		Start			1
VALUE	Acct-Status-Type		Stop			2
VALUE	Acct-Status-Type		Interim-Update		3
VALUE	Acct-Status-Type		Accounting-On		7
VALUE	Acct-Status-Type		Accounting-Off		8
VALUE	Service-Type			Framed-User		2
VALUE	Framed-Protocol			PPP			1
VALUE	NAS-Port-Type			Ethernet		15
VALUE	NAS-Port-Type			Wireless-802.11		19
VALUE	Acct-Terminate-Cause		User-Request		1
VALUE	Acct-Terminate-Cause		Lost-Carrier		2
VALUE	Acct-Terminate-Cause		Idle-Timeout		4
VALUE	Acct-Terminate-Cause		Session-Timeout		5
VALUE	Acct-Terminate-Cause		Admin-Reset		6
VALUE	Acct-Terminate-Cause		NAS-Reboot		11

VENDOR		Mikrotik			14988
BEGIN-VENDOR	Mikrotik
ATTRIBUTE	Mikrotik-Recv-Limit		1	integer
ATTRIBUTE	Mikrotik-Xmit-Limit		2	integer
ATTRIBUTE	Mikrotik-Group			3	string
ATTRIBUTE	Mikrotik-Rate-Limit		8	string
ATTRIBUTE	Mikrotik-Host-IP		10	ipaddr
ATTRIBUTE	Mikrotik-Recv-Limit-Gigawords	14	integer
ATTRIBUTE	Mikrotik-Xmit-Limit-Gigawords	15	integer
ATTRIBUTE	Mikrotik-Total-Limit		17	integer
ATTRIBUTE	Mikrotik-Total-Limit-Gigawords	18	integer
ATTRIBUTE	Mikrotik-Address-List		19	string
END-VENDOR	Mikrotik
"""


@cache
def dictionary():
    """A pyrad `Dictionary` of `RADIUS_DICTIONARY` (parsed once)."""
    from pyrad.dictionary import Dictionary

    return Dictionary(io.StringIO(RADIUS_DICTIONARY))
