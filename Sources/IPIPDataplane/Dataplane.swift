import IPIPCore
import IPIPResources
import Pcap
