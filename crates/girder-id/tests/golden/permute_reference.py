# Independent reference of girder_id::permute: SipHash-2-4 + Feistel + cycle walking.
import struct
M=(1<<64)-1
def rotl(x,b): return ((x<<b)|(x>>(64-b)))&M
def siphash24(key, data):
    k0,k1=struct.unpack('<QQ',key)
    v0=k0^0x736f6d6570736575; v1=k1^0x646f72616e646f6d; v2=k0^0x6c7967656e657261; v3=k1^0x7465646279746573
    def rnd():
        nonlocal v0,v1,v2,v3
        v0=(v0+v1)&M; v1=rotl(v1,13); v1^=v0; v0=rotl(v0,32)
        v2=(v2+v3)&M; v3=rotl(v3,16); v3^=v2
        v0=(v0+v3)&M; v3=rotl(v3,21); v3^=v0
        v2=(v2+v1)&M; v1=rotl(v1,17); v1^=v2; v2=rotl(v2,32)
    b=len(data)
    full=b-b%8
    for i in range(0,full,8):
        m=struct.unpack('<Q',data[i:i+8])[0]
        v3^=m; rnd(); rnd(); v0^=m
    tail=data[full:]+bytes(8-b%8)
    m=struct.unpack('<Q',tail)[0] | ((b&0xff)<<56)
    v3^=m; rnd(); rnd(); v0^=m
    v2^=0xff
    for _ in range(4): rnd()
    return v0^v1^v2^v3
# test vector from the SipHash paper: key 00..0f, msg 00..0e -> a129ca6149be45e5
assert siphash24(bytes(range(16)), bytes(range(15)))==0xa129ca6149be45e5
def perm(key, domain, x):
    bits=max(2,(domain-1).bit_length())
    h=(bits+1)//2
    mask=(1<<h)-1
    def f(r,half): return siphash24(key, bytes([r,h])+struct.pack('<Q',half)) & mask
    def fwd(x):
        L,R=x>>h,x&mask
        for r in range(10): L,R=R,L^f(r,R)
        return (L<<h)|R
    y=fwd(x)
    while y>=domain: y=fwd(y)
    return y
key=bytes(range(16))
for domain in [1,1000,56800235584,2**32,2**64-1]:
    xs=[0,1,2,999] if domain>=1000 else [0]
    xs=[x for x in xs if x<domain]+([domain-1] if domain>1 else [])
    print(domain, [(x,perm(key,domain,x)) for x in xs])
key2=b'girder-permute!!'
print('key2', [(x,perm(key2,62**6,x)) for x in [0,1,2,3]])
