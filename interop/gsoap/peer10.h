// gSOAP service definition of the wsrm interop peer, RM 1.0 (2005/02).
// Processed by soapcpp2 -c -a (dispatch on wsa:Action); see interop/gsoap/build.
// Contract shared with the CXF peer and `wsrm serve`/`wsrm send`:
//   body  <p xmlns="urn:wsrm:payload">TEXT</p> (request, and the echo reply)
//   one-way       action urn:wsrm:payload/Ping
//   request-reply action urn:wsrm:payload/Echo, reply action urn:wsrm:payload/EchoResponse
#import "soap12.h"
#import "wsrm5.h"
//gsoap p schema namespace: urn:wsrm:payload
//gsoap p schema form: qualified
typedef char *_p__p;
//gsoap ns service name: peer
//gsoap ns service namespace: urn:wsrm:interop
//gsoap ns service style: document
//gsoap ns service encoding: literal
//gsoap ns service method-header-part: Ping wsa5__MessageID
//gsoap ns service method-header-part: Ping wsa5__RelatesTo
//gsoap ns service method-header-part: Ping wsa5__From
//gsoap ns service method-header-part: Ping wsa5__ReplyTo
//gsoap ns service method-header-part: Ping wsa5__FaultTo
//gsoap ns service method-header-part: Ping wsa5__To
//gsoap ns service method-header-part: Ping wsa5__Action
//gsoap ns service method-header-part: Ping wsrm__Sequence
//gsoap ns service method-header-part: Ping wsrm__AckRequested
//gsoap ns service method-header-part: Ping wsrm__SequenceAcknowledgement
//gsoap ns service method-action: Ping urn:wsrm:payload/Ping
int __ns__Ping(_p__p p__p, void);
//gsoap ns service method-header-part: Echo wsa5__MessageID
//gsoap ns service method-header-part: Echo wsa5__RelatesTo
//gsoap ns service method-header-part: Echo wsa5__From
//gsoap ns service method-header-part: Echo wsa5__ReplyTo
//gsoap ns service method-header-part: Echo wsa5__FaultTo
//gsoap ns service method-header-part: Echo wsa5__To
//gsoap ns service method-header-part: Echo wsa5__Action
//gsoap ns service method-header-part: Echo wsrm__Sequence
//gsoap ns service method-header-part: Echo wsrm__AckRequested
//gsoap ns service method-header-part: Echo wsrm__SequenceAcknowledgement
//gsoap ns service method-action: Echo urn:wsrm:payload/Echo
//gsoap ns service method-output-action: Echo urn:wsrm:payload/EchoResponse
int __ns__Echo(_p__p p__p, _p__p *p__p_);
