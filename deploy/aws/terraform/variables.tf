variable "region" {
  description = "AWS region of the company's VPC."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "livecast"
}

variable "vpc_id" {
  description = "The existing VPC, reached from the company network over Direct Connect or VPN."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's address range (instances talk to each other, EFS and the VPC endpoints inside it)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets, one per availability zone (no route to an internet gateway)."
  type        = list(string)
}

variable "company_cidrs" {
  description = "Viewers' address ranges: only they reach the load balancer."
  type        = list(string)
  validation {
    condition     = length(var.company_cidrs) > 0 && !contains(var.company_cidrs, "0.0.0.0/0")
    error_message = "company_cidrs must list the company's ranges, never 0.0.0.0/0."
  }
}

variable "encoder_cidrs" {
  description = "Encoders' address ranges: only they reach RTMP on the ingest."
  type        = list(string)
  validation {
    condition     = length(var.encoder_cidrs) > 0 && !contains(var.encoder_cidrs, "0.0.0.0/0")
    error_message = "encoder_cidrs must list the encoders' ranges, never 0.0.0.0/0."
  }
}

variable "monitoring_cidrs" {
  description = "Where Prometheus runs: it alone reaches the admin ports."
  type        = list(string)
  default     = []
}

variable "ami_id" {
  description = "A Debian 12 AMI (amd64) with the SSM agent."
  type        = string
}

variable "instance_type_web" {
  type    = string
  default = "c7i.large"
}

variable "instance_type_ingest" {
  type    = string
  default = "c7i.xlarge"
}

variable "instance_type_logship" {
  type    = string
  default = "t3.small"
}

variable "release_version" {
  description = "The first release every instance must run (scripts/deploy.sh aws sets later ones); the launch check compares `livecast-<role> --version` with it."
  type        = string
}

variable "release_bucket" {
  description = "Bucket holding release tarballs, s3://<bucket>/livecast-<version>-x86_64-linux.tar.gz (the binaries and deploy/aws/ansible)."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate of the viewers' host name (the internal load balancer serves HTTPS only)."
  type        = string
}

variable "web_min" {
  type    = number
  default = 2
}

variable "web_max" {
  type    = number
  default = 20
}

variable "viewers_per_frontend" {
  description = "Target of the viewers-per-front-end scaling policy."
  type        = number
  default     = 300
}

variable "requests_per_frontend" {
  description = "Target of the ALB requests-per-target scaling policy (per minute)."
  type        = number
  default     = 60000
}

variable "launch_heartbeat_secs" {
  description = "How long a new front-end may stay Pending:Wait before the hook's default result (ABANDON) applies."
  type        = number
  default     = 600
}

variable "terminate_heartbeat_secs" {
  description = "How long a leaving front-end may take to drain and have its log archived before the default (CONTINUE)."
  type        = number
  default     = 600
}

variable "log_retention_days" {
  description = "How long archived access logs are kept."
  type        = number
  default     = 400
}
