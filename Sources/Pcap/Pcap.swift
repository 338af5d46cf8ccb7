import CPcap
import IPIPCore
